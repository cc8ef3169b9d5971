package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	serverCert, serverKey := issue(2, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	id, _ := url.Parse("spiffe://cluster.local/ns/meshfed-system/sa/meshfed-eastwest-gateway")
	clientCert, clientKey := issue(3, &x509.Certificate{URIs: []*url.URL{id}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": clientCert, "tls.key": clientKey,
		"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	server, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{server: server, roots: roots, files: XDSFiles{CertDir: dir, BundleFile: filepath.Join(dir, "ca.pem")}}
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
