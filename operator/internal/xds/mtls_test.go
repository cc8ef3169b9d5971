package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/meshfed/meshfed/operator/internal/ca"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// testCredentials are a server's mTLS material from a test CA: what ca.TLSSource reads
// from Secrets in the operator. client is a workload certificate of namespace "ns".
type testCredentials struct {
	server, client tls.Certificate
	roots          *x509.CertPool
}

func newTestCredentials(t testing.TB) *testCredentials {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	id, _ := url.Parse("spiffe://cluster.local/ns/ns/sa/proxy")
	c := &testCredentials{
		server: issue(2, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}),
		client: issue(3, &x509.Certificate{URIs: []*url.URL{id}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}),
		roots:  x509.NewCertPool(),
	}
	c.roots.AddCert(root)
	return c
}

func (c *testCredentials) Certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return &c.server, nil
}

func (c *testCredentials) VerifyClient(_ context.Context, cs tls.ConnectionState) (*url.URL, error) {
	return ca.VerifyClient(cs, c.roots)
}

// security is the xDS server's Security with these credentials.
func (c *testCredentials) security() *Security {
	return &Security{TLS: c, MeshNamespace: "meshfed-system", MaxConnections: 5000, MaxConnectionAge: time.Hour,
		TrustDomain: func(context.Context) (string, error) { return "cluster.local", nil }}
}

// clientTLS is a workload's side of the connection.
func (c *testCredentials) clientTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.client}, RootCAs: c.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// TestASecuredServerServesOnlyWhatACertificateAllows: plaintext gets nothing, a workload
// of namespace "ns" gets its configuration as a node of "ns" and is refused as another.
func TestASecuredServerServesOnlyWhatACertificateAllows(t *testing.T) {
	creds := newTestCredentials(t)
	s := startSecured(t, newModel(2, 2), creds)
	ctx := t.Context()
	first := func(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node string) error {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.EndpointType, ResourceNames: []string{watched}}); err != nil {
			return err
		}
		_, err := stream.Recv()
		return err
	}
	if err := first(adsStream(ctx, t, s.Addr(), creds), "proxy-0.ns"); err != nil {
		t.Errorf("a workload as a node of its namespace: %v", err)
	}
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	plain, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err == nil {
		err = first(plain, "proxy-0.ns")
	}
	if err == nil {
		t.Error("a plaintext client was served")
	}
	err = first(adsStream(ctx, t, s.Addr(), creds), "proxy-0.kube-system")
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a workload as a node of another namespace: %v, want PermissionDenied", err)
	}
}
