// Package config_test installs the operator the way `kubectl apply -k config/default`
// does and runs it with the rendered Deployment's settings.
package config_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation/join"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

const ns = "meshfed-system"

// render runs kustomize (built by `make tools`) on a config/ directory.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	kustomize := filepath.Join(testbed.BinDir(".."), "kustomize")
	if _, err := os.Stat(kustomize); err != nil {
		if os.Getenv("MESHFED_REQUIRE_TESTBED") != "" {
			t.Fatalf("%s missing: run make tools", kustomize)
		}
		t.Skipf("%s missing: run make tools", kustomize)
	}
	out, err := exec.Command(kustomize, "build", dir).Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// TestInstallFromConfigDefault applies config/default to a testbed cluster, runs the
// operator with the Deployment's arguments under the Deployment's ServiceAccount and with
// the webhook certificate cert-manager issued, and sees the sample Mesh become Ready.
//
// The ValidatingWebhookConfiguration is left out: the testbed has no kube-proxy, so the
// API server cannot reach a Service; the webhooks are tested through a URL in
// operator/webhook.
// TestInstallFromConfigDefault installs meshfed as a user does: the testbed applies
// config/default (pointed at its registry) with kubectl, and the operator runs as pods of
// that Deployment, with that ServiceAccount and RBAC, and serves its webhooks through
// their Service.
func TestInstallFromConfigDefault(t *testing.T) {
	objs := render(t, "default")
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	if !testbed.CanRunPods(tb) {
		t.Skip(testbed.ErrNeedsRoot.Error())
	}
	c := tb.Clusters[0]
	ctx := context.Background()

	var deploy appsv1.Deployment
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &deploy))
		}
	}
	container := deploy.Spec.Template.Spec.Containers[0]

	t.Run("RBAC grants no wildcards", func(t *testing.T) {
		for _, o := range objs {
			if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
				continue
			}
			var r rbacv1.ClusterRole
			must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r))
			for _, rule := range r.Rules {
				if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") {
					t.Errorf("%s %s grants a wildcard: %+v", o.GetKind(), r.Name, rule)
				}
			}
		}
	})

	t.Run("the hub's and a member's rights are apart", func(t *testing.T) {
		rules := map[string][]rbacv1.PolicyRule{}
		for _, o := range objs {
			if o.GetKind() == "ClusterRole" || o.GetKind() == "Role" {
				var r rbacv1.ClusterRole
				must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r))
				rules[o.GetKind()+"/"+r.Name] = append(rules[o.GetKind()+"/"+r.Name], r.Rules...)
			}
		}
		grants := func(role, resource string) bool {
			return slices.ContainsFunc(rules[role], func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, resource) })
		}
		for _, resource := range []string{"meshfederations", "clusterissuers"} {
			if grants("ClusterRole/meshfed-member", resource) || grants("ClusterRole/meshfed-operator", resource) || !grants("ClusterRole/meshfed-hub", resource) {
				t.Errorf("%s: only the hub's ClusterRole may grant it", resource)
			}
		}
		for _, resource := range []string{"meshes", "endpointslices", "nodes", "mutatingwebhookconfigurations"} {
			if grants("ClusterRole/meshfed-hub", resource) || grants("ClusterRole/meshfed-operator", resource) || !grants("ClusterRole/meshfed-member", resource) {
				t.Errorf("%s: only the member's ClusterRole may grant it", resource)
			}
		}
		for _, resource := range []string{"deployments", "poddisruptionbudgets", "networkpolicies"} {
			if !grants("Role/meshfed-member", resource) || grants("ClusterRole/meshfed-member", resource) || grants("Role/meshfed-hub", resource) {
				t.Errorf("%s: only the member's Role (its mesh namespace) may grant it", resource)
			}
		}
		if grants("ClusterRole/meshfed-hub", "secrets") || grants("ClusterRole/meshfed-member", "secrets") {
			t.Error("a ClusterRole grants Secrets: only the Roles of meshfed's namespace may")
		}
	})

	t.Run("the pod template passes the restricted Pod Security level", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "security-check"}, Spec: deploy.Spec.Template.Spec}
		if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
			t.Fatalf("the namespace enforces restricted and refuses the operator's pod: %v", err)
		}
		sc := container.SecurityContext
		if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !ptr.Deref(sc.RunAsNonRoot, false) {
			t.Errorf("container security context %+v: want a read-only root FS and non-root", sc)
		}
		if container.Resources.Requests == nil || container.LivenessProbe == nil || container.ReadinessProbe == nil {
			t.Error("the container needs resource requests and both probes")
		}
	})

	t.Run("the operator runs as pods of its Deployment, from its image by digest", func(t *testing.T) {
		var pods corev1.PodList
		must(t, c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(deploy.Spec.Selector.MatchLabels)))
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			running++
			if img := p.Spec.Containers[0].Image; img != tb.Images.Operator {
				t.Errorf("pod %s runs %s, want %s", p.Name, img, tb.Images.Operator)
			}
			if p.Spec.ServiceAccountName != deploy.Spec.Template.Spec.ServiceAccountName {
				t.Errorf("pod %s runs as %s", p.Name, p.Spec.ServiceAccountName)
			}
		}
		if running == 0 {
			t.Fatalf("no running operator pod among %d", len(pods.Items))
		}
	})

	t.Run("the validating webhooks are registered and called through their Service", func(t *testing.T) {
		bad := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshSpec{ClusterName: "east-1", Network: "net-east"}}
		bad.Spec.ControlPlane.XDSPort, bad.Spec.EastWestGateway.Port = 15443, 15443
		testbed.Eventually(t, time.Minute, "the webhook refuses a Mesh whose gateway and xDS server share a port", func() error {
			err := c.Client.Create(ctx, bad, client.DryRunAll)
			if err == nil {
				return errors.New("accepted")
			}
			if !strings.Contains(err.Error(), `admission webhook "vmesh.meshfed.io" denied the request`) || !strings.Contains(err.Error(), "cannot share a port") {
				return err
			}
			return nil
		})
	})

	raw, err := os.ReadFile(filepath.Join("samples", "meshfed_v1alpha1_mesh.yaml"))
	must(t, err)
	var mesh meshv1.Mesh
	must(t, yaml.UnmarshalStrict(raw, &mesh))
	testbed.MustCreate(ctx, t, c.Client, &mesh)
	meshReady := func(want metav1.ConditionStatus, reason string) func() error {
		return func() error {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(&mesh), &mesh); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionReady)
			if cond == nil || cond.Status != want || mesh.Status.ObservedGeneration != mesh.Generation || !strings.Contains(cond.Message, reason) {
				return fmt.Errorf("conditions %+v", mesh.Status.Conditions)
			}
			return nil
		}
	}
	testbed.Eventually(t, 2*time.Minute, "the sample Mesh is Ready", meshReady(metav1.ConditionTrue, ""))
	// The gateway's pods need their xDS certificate, from the member's CA: the cluster
	// joins a federation of its own.
	_, err = join.Join(ctx, join.Options{Name: mesh.Spec.ClusterName, Member: c.Client, MemberConfig: c.Config, Hub: c.Client, HubNamespace: ns})
	must(t, err)
	testbed.MustCreate(ctx, t, c.Client, &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alone"},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned},
			Members: []meshv1.Member{{Name: mesh.Spec.ClusterName, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(mesh.Spec.ClusterName)}}}}})
	testbed.Eventually(t, 2*time.Minute, "the sample Mesh's gateway is Ready", func() error {
		must(t, c.Client.Get(ctx, client.ObjectKeyFromObject(&mesh), &mesh))
		if !meta.IsStatusConditionTrue(mesh.Status.Conditions, meshv1.ConditionGatewayReady) {
			return fmt.Errorf("conditions %+v", mesh.Status.Conditions)
		}
		return nil
	})

	t.Run("the gateways are pods of the Deployment the Mesh reconciler writes, behind a load-balancer address", func(t *testing.T) {
		var pods corev1.PodList
		must(t, c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "meshfed-eastwest-gateway"}))
		ready := 0
		for _, p := range pods.Items {
			if img := p.Spec.Containers[0].Image; img != tb.Images.Gateway {
				t.Errorf("gateway pod %s runs %s, want %s", p.Name, img, tb.Images.Gateway)
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == 0 {
			t.Errorf("no ready gateway pod among %d", len(pods.Items))
		}
		if !strings.HasPrefix(mesh.Status.GatewayAddress, "198.18.") {
			t.Errorf("gateway address %q is not the testbed load balancer's", mesh.Status.GatewayAddress)
		}
	})

	t.Run("the operator holds its leader election Lease", func(t *testing.T) {
		lease := &unstructured.Unstructured{}
		lease.SetAPIVersion("coordination.k8s.io/v1")
		lease.SetKind("Lease")
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshfed-operator.meshfed.io"}, lease); err != nil {
			t.Errorf("no leader election Lease in %s: %v", ns, err)
		}
	})

	t.Run("each operator replica publishes its xDS proxy count in a Lease its pod owns", func(t *testing.T) {
		var pods corev1.PodList
		must(t, c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(deploy.Spec.Selector.MatchLabels)))
		must(t, testbed.Poll(ctx, 30*time.Second, "a census Lease per running operator pod", func() error {
			for _, p := range pods.Items {
				if p.Status.Phase != corev1.PodRunning {
					continue
				}
				lease := &unstructured.Unstructured{}
				lease.SetAPIVersion("coordination.k8s.io/v1")
				lease.SetKind("Lease")
				if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshfed-xds-" + p.Name}, lease); err != nil {
					return err
				}
				if owners := lease.GetOwnerReferences(); len(owners) != 1 || owners[0].UID != p.UID {
					return fmt.Errorf("Lease %s is owned by %+v, want pod %s", lease.GetName(), owners, p.UID)
				}
			}
			return nil
		}))
	})

	t.Run("the operator reads no Secret and writes no workload outside the namespaces meshfed owns", func(t *testing.T) {
		sa := "system:serviceaccount:" + ns + ":meshfed-operator"
		cases := []struct {
			namespace, verb, group, resource string
			allowed                          bool
		}{
			{"", "list", "", "secrets", false},
			{"default", "get", "", "secrets", false},
			{ns, "get", "", "secrets", true},
			{"default", "create", "apps", "deployments", false},
			{"", "list", "apps", "deployments", false},
			{ns, "create", "apps", "deployments", true},
			{"default", "delete", "", "services", false},
			{"", "list", "", "services", true}, // the control plane reads every Service
			{"default", "create", "policy", "poddisruptionbudgets", false},
		}
		for _, tc := range cases {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: sa,
				Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: tc.namespace, Verb: tc.verb, Group: tc.group, Resource: tc.resource}}}
			must(t, c.Client.Create(ctx, review))
			if review.Status.Allowed != tc.allowed {
				t.Errorf("%s %s in namespace %q: allowed %v, want %v", tc.verb, tc.resource, tc.namespace, review.Status.Allowed, tc.allowed)
			}
		}
	})

	t.Run("the operator's metrics answer only callers allowed to read them", func(t *testing.T) {
		url := c.OperatorMetricsURL(ctx)
		if url == "" {
			t.Fatal("no operator leads")
		}
		// Two service accounts of the cluster: one bound to the reader role, one not.
		// (The operator caches a refusal for 30 s: the accounts are distinct, not one
		// bound late.)
		token := func(name string) string {
			testbed.MustCreate(ctx, t, c.Client, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
			tr, err := c.Kube.CoreV1().ServiceAccounts("default").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			must(t, err)
			return tr.Status.Token
		}
		curious, reader := token("curious"), token("reader")
		testbed.MustCreate(ctx, t, c.Client, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader-reads-metrics"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "meshfed-metrics-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "reader"}}})
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the operator's self-signed certificate
		status := func(token string) int {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			must(t, err)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			must(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		// Longer than the refusal cache, should a first try beat the binding's propagation.
		testbed.Eventually(t, 75*time.Second, "the bound account reads the metrics", func() error {
			if got := status(reader); got != http.StatusOK {
				return fmt.Errorf("status %d", got)
			}
			return nil
		})
		if got := status(""); got != http.StatusUnauthorized {
			t.Errorf("without a token: %d, want 401", got)
		}
		if got := status(curious); got != http.StatusForbidden {
			t.Errorf("with a token not allowed to read metrics: %d, want 403", got)
		}
	})

	// Last: it takes a rule away from the operator.
	t.Run("the operator runs with exactly config/rbac: a rule taken away is a Mesh that is not Ready", func(t *testing.T) {
		var role rbacv1.Role
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshfed-member"}, &role))
		kept := role.Rules[:0]
		for _, r := range role.DeepCopy().Rules {
			if !slices.Contains(r.Resources, "deployments") {
				kept = append(kept, r)
			}
		}
		role.Rules = kept
		must(t, c.Client.Update(ctx, &role))
		// A patch of the spec: the operator writes the Mesh's status all along.
		must(t, c.Client.Get(ctx, client.ObjectKeyFromObject(&mesh), &mesh))
		before := mesh.DeepCopy()
		mesh.Spec.EastWestGateway.Replicas = ptr.To[int32](1)
		must(t, c.Client.Patch(ctx, &mesh, client.MergeFrom(before)))
		testbed.Eventually(t, time.Minute, "the Mesh reports the missing permission", meshReady(metav1.ConditionFalse, "forbidden"))
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
