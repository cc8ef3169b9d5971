// Package config_test installs the operator the way `kubectl apply -k config/default`
// does and runs it with the rendered Deployment's settings.
package config_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

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
func TestInstallFromConfigDefault(t *testing.T) {
	objs := render(t, "default")
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := context.Background()

	var deploy appsv1.Deployment
	for _, o := range objs {
		switch o.GetKind() {
		case "ValidatingWebhookConfiguration":
			continue
		case "Deployment":
			must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &deploy))
		}
		if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.ForceOwnership, client.FieldOwner("install-test")); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
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

	// The webhook certificate, issued by the cluster's cert-manager.
	var cert corev1.Secret
	testbed.Eventually(t, time.Minute, "cert-manager issues the webhook certificate", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshfed-webhook-cert"}, &cert)
	})
	certDir := t.TempDir()
	for _, k := range []string{"tls.crt", "tls.key"} {
		must(t, os.WriteFile(filepath.Join(certDir, k), cert.Data[k], 0o600))
	}

	// The operator's identity: a token of the Deployment's ServiceAccount.
	tr, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, deploy.Spec.Template.Spec.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	must(t, err)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"c": {Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"sa": {Token: tr.Status.Token}},
		Contexts:       map[string]*clientcmdapi.Context{"c": {Cluster: "c", AuthInfo: "sa"}},
		CurrentContext: "c",
	}, kubeconfig))

	// The Deployment's arguments, with the listen addresses moved to free ports of the
	// cluster's address, and what a pod gets from its environment: the kubeconfig of its
	// ServiceAccount, its namespace and the mounted certificate.
	probeAddr := freeAddr(t, c.HostIP())
	args := []string{"--kubeconfig=" + kubeconfig, "--leader-election-namespace=" + ns, "--webhook-cert-dir=" + certDir,
		"--webhook-bind-host=" + c.HostIP(), "--xds-bind-host=" + c.HostIP()}
	for _, a := range container.Args {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = "--metrics-bind-address=" + freeAddr(t, c.HostIP())
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=" + probeAddr
		case strings.HasPrefix(a, "--webhook-port="):
			_, port, _ := net.SplitHostPort(freeAddr(t, c.HostIP()))
			a = "--webhook-port=" + port
		}
		args = append(args, a)
	}
	var env []string
	for _, e := range container.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	must(t, tb.StartOperatorProcess(ctx, c, "installed-operator", args, env...))
	testbed.Eventually(t, time.Minute, "the operator is ready (webhook server included)", func() error {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("/readyz: %s %s", resp.Status, body)
		}
		return nil
	})

	raw, err := os.ReadFile(filepath.Join("samples", "meshfed_v1alpha1_mesh.yaml"))
	must(t, err)
	var mesh meshv1.Mesh
	must(t, yaml.UnmarshalStrict(raw, &mesh))
	testbed.MustCreate(ctx, t, c.Client, &mesh)
	testbed.Eventually(t, time.Minute, "the sample Mesh is Ready", func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(&mesh), &mesh); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionReady)
		if cond == nil || cond.Status != metav1.ConditionTrue || mesh.Status.ObservedGeneration != mesh.Generation {
			return fmt.Errorf("conditions %+v", mesh.Status.Conditions)
		}
		return nil
	})

	var lease = &unstructured.Unstructured{}
	lease.SetAPIVersion("coordination.k8s.io/v1")
	lease.SetKind("Lease")
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshfed-operator.meshfed.io"}, lease); err != nil {
		t.Errorf("the operator holds no leader election Lease in %s: %v", ns, err)
	}
}

func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	port, err := testbed.FreePort(ip)
	must(t, err)
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
