# meshfed — make help lists every target.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT    := $(abspath .)
BIN     := $(ROOT)/bin
GO      ?= go
VERSION ?= 0.1.0
export GOTOOLCHAIN := local

# Versions of the tools built from hack/tools/<tool> (each wrapper module pins its own).
KUBE_VERSION := v1.36.3
KUBE_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=36 \
	-X $(p).gitTreeState=clean -X $(p).buildDate=2026-01-01T00:00:00Z)

CONTROLLER_GEN := $(BIN)/controller-gen
KUSTOMIZE      := $(BIN)/kustomize
KUTTL          := $(BIN)/kubectl-kuttl
GOLANGCI_LINT  := $(BIN)/golangci-lint
TESTBED_TOOLS  := $(BIN)/etcd $(BIN)/kube-apiserver $(BIN)/kube-controller-manager $(BIN)/kube-scheduler $(BIN)/kube-proxy $(BIN)/kubectl $(BIN)/cert-manager-controller $(BIN)/registry $(BIN)/coredns
TOOLS          := $(TESTBED_TOOLS) $(CONTROLLER_GEN) $(KUSTOMIZE) $(KUTTL) $(GOLANGCI_LINT)

GO_TEST_FLAGS ?= -count=1 -timeout 30m
# Where `make images` pushes: the local registry (bin/registry), started there if needed.
REGISTRY ?= 127.0.0.1:5000
# vtprotobuf turns on go-control-plane's generated marshalers, which the translator's
# content hashes use; without it everything works, through reflection, more slowly.
GO_TAGS := -tags=vtprotobuf

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_.-]+:.*?##/ { printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Front door

.PHONY: demo
demo: tools build ## Federate 3 local clusters and show export/import, trust, cross-cluster calls, a split, a failover, a header-routed canary and an authorization refusal (DEMO_FLAGS=--keep keeps them up).
	$(BIN)/testbed demo $(DEMO_FLAGS)

.PHONY: test
test: tools build image-binaries verify-generated verify-bundle vet fmt-check lint ## Run unit and integration tests (starts local clusters), vet, gofmt and lint checks.
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) $(GO_TEST_FLAGS) ./...
	$(MAKE) --no-print-directory kuttl

##@ Development

.PHONY: build
build: ## Build operator, meshfedctl, eastwest-gateway, testbed and workload into bin/.
	$(GO) build $(GO_TAGS) -ldflags "-X github.com/meshfed/meshfed/operator/internal/app.Version=$(VERSION)" -o $(BIN)/operator ./operator/cmd
	$(GO) build $(GO_TAGS) -o $(BIN)/meshfedctl ./operator/cmd/meshfedctl
	$(GO) build $(GO_TAGS) -o $(BIN)/eastwest-gateway ./eastwest-gateway/cmd/eastwest-gateway
	$(GO) build $(GO_TAGS) -o $(BIN)/testbed ./testbed/cmd/testbed
	$(GO) build $(GO_TAGS) -o $(BIN)/workload ./testbed/cmd/workload

# The images' binaries are static (CGO_ENABLED=0, -trimpath, as internal/imagebuild builds
# them), so they share no build cache with bin/'s: compiling them once here keeps a cold
# machine's first testbed start, which builds the images, within its time limit.
.PHONY: image-binaries
image-binaries:
	CGO_ENABLED=0 $(GO) build -trimpath $(GO_TAGS) ./operator/cmd ./eastwest-gateway/cmd/eastwest-gateway \
		./agent/cmd/meshfed-agent ./dns/cmd/meshfed-dns ./testbed/cmd/echo ./testbed/cmd/workload

.PHONY: images
images: $(BIN)/registry ## Build the operator and gateway images (OCI, no Docker; bin/images) and push them to REGISTRY (default 127.0.0.1:5000, the local registry, started there when none answers).
	$(GO) run ./hack/images -version $(VERSION) -registry $(REGISTRY) -start-registry $(BIN)/registry -registry-dir $(ROOT)/.testbed/registry

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object paths=./operator/api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC and webhook manifests into config/.
	$(CONTROLLER_GEN) crd paths=./operator/api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=meshfed-operator paths=./operator/internal/app/... output:rbac:artifacts:config=config/rbac/shared
	$(CONTROLLER_GEN) rbac:roleName=meshfed-hub paths=./operator/internal/controller/meshfederation/... output:rbac:artifacts:config=config/rbac/hub
	$(CONTROLLER_GEN) rbac:roleName=meshfed-member \
		paths="./operator/internal/controller/mesh/...;./operator/internal/controller/clustersetip/...;./operator/internal/controller/servicepolicy/...;./operator/internal/controller/routes/...;./operator/internal/ca/...;./operator/internal/feed/...;./operator/internal/inject/..." \
		output:rbac:artifacts:config=config/rbac/member
	$(CONTROLLER_GEN) webhook paths=./operator/... output:webhook:artifacts:config=config/webhook
	@dir=$$($(GO) list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api) && for crd in grpcroutes httproutes referencegrants; do \
		install -m 644 $$dir/config/crd/standard/gateway.networking.k8s.io_$$crd.yaml config/gateway-api/; done

GENERATED := operator/api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/shared config/rbac/hub config/rbac/member config/webhook/manifests.yaml config/gateway-api

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if generated code or CRDs are stale (and regenerate them).
	@before=$$(cat $$(find $(GENERATED) -type f | sort) | sha256sum); \
	$(MAKE) --no-print-directory generate manifests >/dev/null; \
	after=$$(cat $$(find $(GENERATED) -type f | sort) | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "generated files were stale; they are regenerated now: review and commit $(GENERATED)"; exit 1; fi

.PHONY: kuttl
kuttl: tools build ## Run the kuttl scenarios (kuttl-tests/) on 3 local clusters: cluster-1 hub, cluster-2 and -3 members.
	$(BIN)/testbed run --clusters 3 -- ./hack/kuttl.sh $(KUTTL_FLAGS)

.PHONY: bundle
bundle: $(KUSTOMIZE) ## Generate the OLM bundle bundles/meshfed/$(VERSION) from config/.
	$(KUSTOMIZE) build config/manifests | $(GO) run ./hack/bundle bundle -version $(VERSION)

.PHONY: catalog
catalog: ## Generate the file-based catalog bundles/catalog from the bundles.
	$(GO) run ./hack/bundle catalog

.PHONY: verify-bundle
verify-bundle: $(KUSTOMIZE) ## Fail if the bundle or catalog differs from what config/ generates (and regenerate them).
	@before=$$(cd bundles && find meshfed catalog -type f | sort | xargs sha256sum | sha256sum); \
	$(MAKE) --no-print-directory bundle catalog >/dev/null; \
	after=$$(cd bundles && find meshfed catalog -type f | sort | xargs sha256sum | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "the bundle or catalog was stale; it is regenerated now: review and commit bundles/"; exit 1; fi

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet $(GO_TAGS) ./...

.PHONY: fmt-check
fmt-check: ## Fail if any Go file is not gofmt-formatted.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted (run gofmt -w):"; echo "$$out"; exit 1; fi

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml: staticcheck, revive, errorlint, importas, depguard's import rules...).
	$(GOLANGCI_LINT) run ./...

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: test-unit
test-unit: ## Run only the tests that need no local clusters.
	$(GO) test $(GO_TAGS) $(GO_TEST_FLAGS) -short ./...

.PHONY: bench
bench: tools build ## Run the benchmarks: testbed start, pod start-up, injected pods, federation latency and burst, xDS builds and pushes (endpoints, routes), RBAC per call, failover and splits, clusterset.local DNS.
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench Start3Clusters -benchtime 3x -timeout 30m ./testbed
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench PodStartup -benchtime 100x -timeout 30m ./testbed
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'InjectedPodsAtOnce|PlainPodsAtOnce' -benchtime 1x -timeout 30m ./operator/internal/inject
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench ExportToImport -benchtime 200x -timeout 30m ./operator/internal/controller/meshfederation
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench ExportBurst -benchtime 1x -timeout 30m ./operator/internal/controller/meshfederation
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench ServiceImportWrites -benchtime 3x -timeout 30m ./testbed
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench BurstFloor -benchtime 1x -timeout 30m ./testbed
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'Translate100x100$$' -benchtime 50x ./operator/internal/translate
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'Translate100x100OneEndpointChange$$' -benchtime 300x ./operator/internal/translate
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'Translate100x100PeerChange$$' -benchtime 50x ./operator/internal/translate
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'Check100x100$$' -benchtime 50x ./operator/internal/translate
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'Push100x100OneEndpointChange$$' -benchtime 300x ./operator/internal/translate
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench 'EDSPushTo1000Clients|RouteChangeTo1000Clients' -benchtime 50x ./operator/internal/xds
	$(GO) test $(GO_TAGS) -count=3 -run '^$$' -bench RBACPerCall -benchtime 3s ./operator/internal/xds
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench FailoverAndSplit -benchtime 5x -timeout 30m ./operator/internal/xds
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench ExportToResolvable -benchtime 50x -timeout 30m ./dns/e2e
	MESHFED_REQUIRE_TESTBED=1 $(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench ClusterSetVsKubernetes -benchtime 2x -timeout 30m ./dns/cmd/meshfed-dns
	@command -v nginx >/dev/null && command -v haproxy >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-stream haproxy
	$(GO) test $(GO_TAGS) -count=1 -run '^$$' -bench CompareProxies -benchtime 30x -timeout 30m ./eastwest-gateway/gateway

##@ Tools (built from hack/tools, cached in bin/)

.PHONY: tools
tools: $(TOOLS) ## Build every tool the tests, demo and code generation need.

KUBE_BINS := kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl

$(addprefix $(BIN)/,$(KUBE_BINS)) &: hack/tools/kube/go.mod hack/tools/kube/go.sum hack/tools/kube/tools.go
	@echo "building $(KUBE_BINS) $(KUBE_VERSION) (several minutes on a cold cache)"
	cd hack/tools/kube && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/ \
		$(addprefix k8s.io/kubernetes/cmd/,$(KUBE_BINS))
	@touch $(addprefix $(BIN)/,$(KUBE_BINS))

$(BIN)/etcd: hack/tools/etcd/go.mod hack/tools/etcd/go.sum hack/tools/etcd/main.go
	cd hack/tools/etcd && $(GO) build -trimpath -ldflags '-s -w' -o $@ .

# Static: it runs as a pod, chrooted into its image.
$(BIN)/coredns: hack/tools/coredns/go.mod hack/tools/coredns/go.sum hack/tools/coredns/main.go
	cd hack/tools/coredns && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ .

$(BIN)/registry: hack/tools/registry/go.mod hack/tools/registry/go.sum hack/tools/registry/main.go
	cd hack/tools/registry && $(GO) build -trimpath -ldflags '-s -w' -o $@ .

$(BIN)/cert-manager-controller: hack/tools/certmanager/go.mod hack/tools/certmanager/go.sum $(wildcard hack/tools/certmanager/*.go)
	cd hack/tools/certmanager && $(GO) build -trimpath -ldflags '-s -w' -o $@ .

$(CONTROLLER_GEN): hack/tools/controller-gen/go.mod hack/tools/controller-gen/go.sum
	cd hack/tools/controller-gen && $(GO) build -trimpath -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(KUSTOMIZE): hack/tools/kustomize/go.mod hack/tools/kustomize/go.sum
	cd hack/tools/kustomize && $(GO) build -trimpath -o $@ sigs.k8s.io/kustomize/kustomize/v5

$(GOLANGCI_LINT): hack/tools/golangci-lint/go.mod hack/tools/golangci-lint/go.sum
	cd hack/tools/golangci-lint && $(GO) build -trimpath -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(KUTTL): hack/tools/kuttl/go.mod hack/tools/kuttl/go.sum
	cd hack/tools/kuttl && $(GO) build -trimpath -o $@ github.com/kudobuilder/kuttl/cmd/kubectl-kuttl

.PHONY: clean
clean: ## Remove bin/ (tools and binaries).
	rm -rf $(BIN)
