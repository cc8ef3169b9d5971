package main_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/testbed"
)

// TestMeshfedDNSServesTheZone runs the meshfed-dns binary (CoreDNS with the clusterset
// plugin) on a Corefile against a real API server: it reports ready once it holds the
// cluster's imports, answers their names over UDP, and refuses other zones.
func TestMeshfedDNSServesTheZone(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := context.Background()
	bin := buildMeshfedDNS(t)
	server := serve(t, bin, func(port, readyPort int) string {
		return fmt.Sprintf("clusterset.local:%d {\n  bind 127.0.0.1\n  ready 127.0.0.1:%d\n  errors\n  clusterset {\n    kubeconfig %s\n    ttl 7\n  }\n}\n", port, readyPort, c.KubeconfigPath)
	})

	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))
	testbed.MustCreate(ctx, t, c.Client, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"243.0.0.9"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}})
	query := func(name string) (*dns.Msg, error) {
		req := new(dns.Msg)
		req.SetQuestion(name, dns.TypeA)
		resp, _, err := new(dns.Client).Exchange(req, server)
		return resp, err
	}
	testbed.Eventually(t, 10*time.Second, "cart.shop.svc.clusterset.local resolves", func() error {
		resp, err := query("cart.shop.svc.clusterset.local.")
		if err != nil {
			return err
		}
		if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "243.0.0.9" || resp.Answer[0].Header().Ttl != 7 {
			return fmt.Errorf("answer %v", resp.Answer)
		}
		return nil
	})
	if resp, err := query("gone.shop.svc.clusterset.local."); err != nil || resp.Rcode != dns.RcodeNameError {
		t.Errorf("a service not imported: %v (%v), want NXDOMAIN", resp, err)
	}
	if resp, err := query("kubernetes.default.svc.cluster.local."); err != nil || resp.Rcode != dns.RcodeRefused {
		t.Errorf("another zone: %v (%v), want REFUSED", resp, err)
	}
}

// buildMeshfedDNS builds this command.
func buildMeshfedDNS(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshfed-dns")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serve runs a CoreDNS binary on the Corefile conf gives for its DNS and ready ports (on
// 127.0.0.1) until the test ends, and returns its DNS address once it reports ready.
func serve(t testing.TB, bin string, conf func(port, readyPort int) string) string {
	t.Helper()
	dnsPort, err := testbed.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	readyPort, err := testbed.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	corefile := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(corefile, []byte(conf(dnsPort, readyPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-conf", corefile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cancel(); <-exited })
	testbed.Eventually(t, 30*time.Second, filepath.Base(bin)+" ready", func() error {
		select {
		case <-exited:
			t.Fatalf("%s exited: %v", bin, waitErr)
		default:
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(readyPort) + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %s", resp.Status)
		}
		return nil
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
}
