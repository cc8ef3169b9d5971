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
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshfed-dns")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dnsPort, err := testbed.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	readyPort, err := testbed.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	corefile := filepath.Join(dir, "Corefile")
	conf := fmt.Sprintf("clusterset.local:%d {\n  bind 127.0.0.1\n  ready 127.0.0.1:%d\n  errors\n  clusterset {\n    kubeconfig %s\n    ttl 7\n  }\n}\n", dnsPort, readyPort, c.KubeconfigPath)
	if err := os.WriteFile(corefile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-conf", corefile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { cancel(); <-exited }()
	testbed.Eventually(t, 30*time.Second, "meshfed-dns ready", func() error {
		select {
		case err := <-exited:
			t.Fatalf("meshfed-dns exited: %v", err)
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

	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))
	testbed.MustCreate(ctx, t, c.Client, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"243.0.0.9"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}})
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
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
