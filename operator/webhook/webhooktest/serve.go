// Package webhooktest serves meshfed's admission webhooks to a testbed cluster's API
// server, for tests. The testbed runs no kube-proxy, so the webhook configuration from
// config/webhook is registered with a URL instead of its Service.
package webhooktest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	meshwebhook "github.com/meshfed/meshfed/operator/webhook"
	"github.com/meshfed/meshfed/testbed"
)

// Serve starts the webhook server on the cluster's address and registers the
// configuration of config/webhook/manifests.yaml (found from repoRoot) with it, then waits
// until the API server calls it. Everything stops when the test ends.
func Serve(t testing.TB, c *testbed.Cluster, repoRoot string) {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := testbed.WriteServingCert(dir, c.HostIP())
	if err != nil {
		t.Fatal(err)
	}
	port, err := testbed.FreePort(c.HostIP())
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Options{Host: c.HostIP(), Port: port, CertDir: dir})
	srv.Register(meshwebhook.MeshPath, admission.WithValidator(testbed.Scheme, meshwebhook.MeshValidator{}))
	srv.Register(meshwebhook.MeshFederationPath, admission.WithValidator(testbed.Scheme, meshwebhook.FederationValidator{Reader: c.Client, Namespace: "meshfed-system"}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Start(ctx); err != nil {
			t.Errorf("webhook server: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })

	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Name = "meshfed-test-" + c.Name
	base := "https://" + net.JoinHostPort(c.HostIP(), strconv.Itoa(port))
	for i := range cfg.Webhooks {
		url := base + *cfg.Webhooks[i].ClientConfig.Service.Path
		cfg.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	}
	testbed.MustCreate(context.Background(), t, c.Client, &cfg)
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), &cfg) })

	// The API server sees the configuration a moment after it is written: a Mesh the
	// webhook alone refuses tells when it does.
	probe := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec: meshv1.MeshSpec{ClusterName: "probe", Network: "probe", Injection: meshv1.InjectionSpec{
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}},
		}}}
	testbed.Eventually(t, 30*time.Second, "the API server calls the webhook", func() error {
		if err := c.Client.Create(context.Background(), probe, client.DryRunAll); err == nil {
			return errors.New("a Mesh only the webhook refuses was admitted")
		}
		return nil
	})
}
