package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/testpki"
)

// testPKI is a CA for the test control plane's mTLS: a server certificate for 127.0.0.1
// and the gateway's client certificate, written as the gateway reads them.
type testPKI struct {
	server tls.Certificate
	roots  *x509.CertPool
	files  XDSFiles
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := testpki.New(t)
	certPEM, keyPEM := testpki.PEM(t, ca.Workload(t, "spiffe://cluster.local/ns/meshfed-system/sa/meshfed-eastwest-gateway"))
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.pem": ca.PEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &testPKI{server: ca.Server(t, net.IPv4(127, 0, 0, 1)), roots: ca.Pool, files: XDSFiles{CertDir: dir, BundleFile: filepath.Join(dir, "ca.pem")}}
}

// serverTLS requires a client certificate of the test CA, as meshfed's xDS server does.
func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.roots, MinVersion: tls.VersionTLS12}
}

func TestTheGatewayChecksItsXDSServer(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	addr := lis.Addr().String()
	if err := handshake(addr, p.files.TLSConfig(addr)); err != nil {
		t.Errorf("the gateway with the federation's bundle: %v", err)
	}
	// A gateway whose bundle is another federation's refuses the server.
	bad := XDSFiles{CertDir: p.files.CertDir, BundleFile: other.files.BundleFile}
	if err := handshake(addr, bad.TLSConfig(addr)); err == nil {
		t.Error("the gateway accepted an xDS server its bundle does not trust")
	}
	// A server name other than the certificate's is refused.
	if err := handshake(addr, p.files.TLSConfig("meshfed-xds.other.svc:15010")); err == nil {
		t.Error("the gateway accepted a certificate for another name")
	}
}

func handshake(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Handshake()
}
