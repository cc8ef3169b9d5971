package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// KeepLogsEnv names the environment variable that keeps a testbed's directory, with every
// process's log, after it stops: "failed" keeps those of tests that failed, any other
// value those of every testbed.
const KeepLogsEnv = "MESHFED_TESTBED_KEEP_LOGS"

// Options configure a testbed.
type Options struct {
	// Clusters is how many clusters to start (default 1).
	Clusters int
	// Dir holds the state, logs and kubeconfigs; empty means a new temporary directory that
	// Stop removes.
	Dir string
	// BinDir holds the binaries (default $MESHFED_BIN_DIR, else <repo>/bin).
	BinDir string
	// Operator installs meshfed in every cluster from its own manifests (config/default,
	// pointed at images of the source tree in the testbed's registry): the operator runs
	// as the pods of its Deployment, with the role OperatorRole gives, and the gateways as
	// the pods of the Deployment the Mesh reconciler writes. It needs root (pods), and
	// implies Pods; LoadBalancer Services get addresses.
	Operator bool
	// OperatorRole picks each cluster's operator role; the default makes the first cluster
	// the hub and a member ("both") and the others members.
	OperatorRole func(index int) string
	// OperatorArgs are flags added to every operator's.
	OperatorArgs []string
	// Registry runs the local OCI registry (Testbed.Registry).
	Registry bool
	// Pods runs a kube-scheduler, a node agent, kube-proxy and a cluster DNS in every
	// cluster, so that pods created through the API run from their images (root only; it
	// implies Registry).
	Pods bool
	// CrashBackOff is the node's first restart delay (default 10 s, the kubelet's).
	CrashBackOff time.Duration
	// TokenRenewAfter makes the node renew projected tokens this long after issue instead
	// of at 80 % of their lifetime.
	TokenRenewAfter time.Duration
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// Testbed is a set of running local clusters.
type Testbed struct {
	// Dir holds every cluster's directory (kubeconfig.yaml, logs).
	Dir string
	// Clusters in start order; cluster i is named "cluster-<i+1>".
	Clusters []*Cluster
	// Registry is the host:port of the local OCI registry (Options.Registry), "" without.
	Registry string
	// Images are the images meshfed was installed from (Options.Operator).
	Images Images

	opts      Options
	repoRoot  string
	removeDir bool
	procs     processGroup
	leases    []octetLease
	etcd      *process
	etcdURL   string
	registry  *process
	stopOnce  sync.Once
	built     map[string]string // binaries built from source for this testbed
	images    map[string]string // images pushed to the registry, by name
	buildMu   sync.Mutex
}

// Start starts opts.Clusters clusters and returns once every API server is ready, every
// CRD is established and every controller runs. On error it stops what it started.
func Start(ctx context.Context, opts Options) (tb *Testbed, err error) {
	if opts.Clusters <= 0 {
		opts.Clusters = 1
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Operator {
		opts.Pods = true
	}
	if opts.Operator && !canCreateNetns() {
		return nil, ErrNeedsRoot
	}
	if opts.Pods {
		opts.Registry = true
	}
	if opts.CrashBackOff <= 0 {
		opts.CrashBackOff = 10 * time.Second
	}
	if opts.OperatorRole == nil {
		opts.OperatorRole = func(i int) string {
			if i == 0 {
				return "both"
			}
			return "member"
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if opts.BinDir == "" {
		opts.BinDir = BinDir(root)
	}
	if err := checkBinaries(opts.BinDir, opts.Registry, opts.Pods); err != nil {
		return nil, err
	}
	tb = &Testbed{Dir: opts.Dir, opts: opts, repoRoot: root}
	if tb.Dir == "" {
		if tb.Dir, err = os.MkdirTemp("", "meshfed-testbed-"); err != nil {
			return nil, err
		}
		keep := os.Getenv(KeepLogsEnv)
		tb.removeDir = keep == "" || keep == "failed"
	}
	defer func() {
		if err != nil {
			tb.Stop()
		}
	}()
	if err := tb.buildProjectBinaries(ctx); err != nil {
		return tb, err
	}
	if tb.leases, err = leaseOctets(opts.Clusters); err != nil {
		return tb, err
	}
	manifests, err := crdManifests(root)
	if err != nil {
		return tb, err
	}
	tb.progress("starting etcd")
	if err := tb.startEtcd(ctx); err != nil {
		return tb, err
	}
	if opts.Registry {
		tb.progress("starting the registry")
		if err := tb.StartRegistry(ctx); err != nil {
			return tb, err
		}
	}
	if opts.Operator {
		if tb.Images, err = tb.meshfedImages(ctx); err != nil {
			return tb, err
		}
	}
	for i, lease := range tb.leases {
		tb.Clusters = append(tb.Clusters, &Cluster{
			Name:  fmt.Sprintf("cluster-%d", i+1),
			Index: i,
			Octet: lease.octet,
			Dir:   filepath.Join(tb.Dir, fmt.Sprintf("cluster-%d", i+1)),
			tb:    tb,
		})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range tb.Clusters {
		g.Go(func() error {
			if err := c.start(gctx, manifests); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return tb, err
	}
	tb.progress("testbed ready: %d clusters in %s", len(tb.Clusters), tb.Dir)
	return tb, nil
}

// Stop stops every process the testbed started (operators and workloads first, etcd
// last), removes the pod networks and, for a temporary Dir, the directory. It is safe to
// call more than once and from a deferred cleanup after a failure.
func (tb *Testbed) Stop() {
	tb.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, c := range tb.Clusters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.stop()
			}()
		}
		wg.Wait()
		if tb.registry != nil {
			tb.registry.stop(5 * time.Second)
		}
		if tb.etcd != nil {
			tb.etcd.stop(10 * time.Second)
		}
		releaseOctets(tb.leases)
		if tb.removeDir {
			os.RemoveAll(tb.Dir)
		}
	})
}

// PIDs lists every process the testbed ever started, so that a test can check none is
// left after Stop.
func (tb *Testbed) PIDs() []int { return tb.procs.allPIDs() }

// CPUTime returns the processor time (user and system) each running process of the
// testbed has used so far, by process name ("etcd", "cluster-1/kube-apiserver", ...).
func (tb *Testbed) CPUTime() map[string]time.Duration { return tb.procs.cpuTimes() }

// LeftoverPIDs returns the started processes that are still alive.
func (tb *Testbed) LeftoverPIDs() []int {
	var alive []int
	for _, pid := range tb.PIDs() {
		if processAlive(pid) {
			alive = append(alive, pid)
		}
	}
	return alive
}

func (tb *Testbed) progress(format string, args ...any) {
	fmt.Fprintf(tb.opts.Progress, format+"\n", args...)
}

func (tb *Testbed) bin(name string) string {
	if tb.built[name] != "" {
		return tb.built[name]
	}
	return filepath.Join(tb.opts.BinDir, name)
}

// IsolateNetworks puts every cluster in a network of its own: a pod can no longer reach
// the pods of another cluster, except that cluster's gateways (addresses by cluster name),
// and a gateway may answer anyone. Without it, pods of all clusters reach each other.
func (tb *Testbed) IsolateNetworks(gateways map[string][]string) error {
	for _, c := range tb.Clusters {
		if c.network == nil {
			return ErrNeedsRoot
		}
		for _, o := range tb.Clusters {
			if o == c {
				continue
			}
			if err := c.network.isolate(o.network, gateways[o.Name], gateways[c.Name]); err != nil {
				return fmt.Errorf("isolate %s from %s: %w", c.Name, o.Name, err)
			}
		}
	}
	return nil
}

// Binary is the path of a binary built from the project: the operator, the workload, or
// echo (the proxyless gRPC workload, built on first use).
func (tb *Testbed) Binary(ctx context.Context, name string) (string, error) {
	tb.buildMu.Lock()
	defer tb.buildMu.Unlock()
	if p := tb.built[name]; p != "" {
		return p, nil
	}
	pkg, ok := projectBinaries[name]
	if !ok {
		return "", fmt.Errorf("no project binary %q", name)
	}
	if err := tb.build(ctx, name, pkg); err != nil {
		return "", err
	}
	return tb.built[name], nil
}

// projectBinaries are the project's commands the testbed runs, by name.
var projectBinaries = map[string]string{"operator": "./operator/cmd", "workload": "./testbed/cmd/workload", "echo": "./testbed/cmd/echo",
	"eastwest-gateway": "./eastwest-gateway/cmd/eastwest-gateway", "node": "./testbed/cmd/node"}

// buildProjectBinaries builds the operator and the workload from the source tree into the
// testbed's directory, so that a test never runs a stale bin/operator (it takes a second or
// two with a warm build cache).
func (tb *Testbed) buildProjectBinaries(ctx context.Context) error {
	tb.built = map[string]string{}
	targets := map[string]string{"workload": projectBinaries["workload"]}
	if tb.opts.Pods && canCreateNetns() {
		targets["node"] = projectBinaries["node"]
	}
	for name, pkg := range targets {
		if err := tb.build(ctx, name, pkg); err != nil {
			return err
		}
	}
	return nil
}

func (tb *Testbed) build(ctx context.Context, name, pkg string) error {
	out := filepath.Join(tb.Dir, "bin", name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = tb.repoRoot
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, msg)
	}
	tb.built[name] = out
	return nil
}

// start launches a process and tracks it for Stop and the leak check.
func (tb *Testbed) start(name, logPath string, argv []string) (*process, error) {
	p, err := startProcess(name, logPath, argv)
	if err != nil {
		return nil, err
	}
	tb.procs.add(p)
	return p, nil
}

func (tb *Testbed) startEtcd(ctx context.Context) error {
	ip := fmt.Sprintf("127.%d.0.2", tb.leases[0].octet)
	clientPort, err := FreePort(ip)
	if err != nil {
		return err
	}
	peerPort, err := FreePort(ip)
	if err != nil {
		return err
	}
	tb.etcdURL = "http://" + ip + ":" + strconv.Itoa(clientPort)
	peerURL := "http://" + ip + ":" + strconv.Itoa(peerPort)
	dir := filepath.Join(tb.Dir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tb.etcd, err = tb.start("etcd", filepath.Join(tb.Dir, "etcd.log"), []string{
		tb.bin("etcd"),
		"--name=testbed",
		"--data-dir=" + filepath.Join(dir, "data"),
		"--listen-client-urls=" + tb.etcdURL,
		"--advertise-client-urls=" + tb.etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=testbed=" + peerURL,
		// The testbed's data is thrown away: skip fsync, it dominates write latency.
		"--unsafe-no-fsync",
		"--log-level=warn",
	})
	if err != nil {
		return err
	}
	return PollEvery(ctx, 20*time.Second, 50*time.Millisecond, "etcd healthy", func(ctx context.Context) error {
		if tb.etcd.exited() {
			return tb.etcd.exitError()
		}
		return httpOK(ctx, tb.etcdURL+"/health")
	})
}

// RepoRoot finds the meshfed module root from the working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && len(data) > 0 && containsModuleLine(string(data)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the meshfed repository: run from the repository (the testbed reads its bin/ and go.mod)")
		}
		dir = parent
	}
}

// containsModuleLine reports whether a go.mod declares the meshfed module.
func containsModuleLine(gomod string) bool {
	for _, line := range strings.Split(gomod, "\n") {
		if strings.TrimSpace(line) == "module github.com/meshfed/meshfed" {
			return true
		}
	}
	return false
}

// BinDir is where the testbed looks for binaries: $MESHFED_BIN_DIR, else <repo>/bin.
func BinDir(repoRoot string) string {
	if dir := os.Getenv("MESHFED_BIN_DIR"); dir != "" {
		return dir
	}
	return filepath.Join(repoRoot, "bin")
}

// ErrMissingBinaries means the tools are not built; `make tools build` builds them.
var ErrMissingBinaries = errors.New("testbed binaries missing: run `make tools build`")

func checkBinaries(dir string, registry, pods bool) error {
	names := []string{"etcd", "kube-apiserver", "kube-controller-manager", "cert-manager-controller"}
	if registry {
		names = append(names, "registry")
	}
	if pods {
		names = append(names, "kube-scheduler", "kube-proxy", "kubectl", "coredns")
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("%w (%s not found in %s)", ErrMissingBinaries, n, dir)
		}
	}
	return nil
}
