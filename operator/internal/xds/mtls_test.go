package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/meshfed/meshfed/internal/testpki"
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
	ca := testpki.New(t)
	return &testCredentials{server: ca.Server(t, net.IPv4(127, 0, 0, 1)), client: ca.Workload(t, "spiffe://cluster.local/ns/ns/sa/proxy"), roots: ca.Pool}
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
		TrustDomain: func(context.Context) (string, error) { return "cluster.local", nil },
		GroupOf:     func(context.Context, string, string) (string, error) { return GroupGRPC, nil }}
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
