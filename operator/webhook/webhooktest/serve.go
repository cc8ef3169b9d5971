// Package webhooktest serves meshfed's admission webhooks to a testbed cluster's API
// server, for tests. The testbed runs no kube-proxy, so the webhook configuration from
// config/webhook is registered with a URL instead of its Service.
package webhooktest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
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
	validation "github.com/meshfed/meshfed/operator/webhook"
	"github.com/meshfed/meshfed/testbed"
)

// Serve starts the webhook server on the cluster's address and registers the
// configuration of config/webhook/manifests.yaml (found from repoRoot) with it, then waits
// until the API server calls it. Everything stops when the test ends.
func Serve(t testing.TB, c *testbed.Cluster, repoRoot string) {
	t.Helper()
	dir := t.TempDir()
	caPEM := writeServingCert(t, dir, c.HostIP())
	port := freePort(t, c.HostIP())
	srv := webhook.NewServer(webhook.Options{Host: c.HostIP(), Port: port, CertDir: dir})
	srv.Register(validation.MeshPath, admission.WithValidator(testbed.Scheme, validation.MeshValidator{}))
	srv.Register(validation.MeshFederationPath, admission.WithValidator(testbed.Scheme, validation.FederationValidator{Reader: c.Client}))
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

func writeServingCert(t testing.TB, dir, ip string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshfed-webhook-test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

func freePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
