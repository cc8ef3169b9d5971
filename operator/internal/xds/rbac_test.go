package xds

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/operator/bootstrap"
	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/proxyless/refusals"
	"github.com/meshfed/meshfed/testbed"
)

type unaryEcho struct {
	testgrpc.UnimplementedTestServiceServer
}

func (unaryEcho) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{}, nil
}

// TestRefusedCallsCounted: a grpc-go server that imports proxyless/refusals counts each call
// its service's policy refuses, by service, method and rule, and not the calls it serves;
// methods a caller invents end Unimplemented before authorization and add no series (the
// package bounds its labels too: TestLabelsAreBounded).
func TestRefusedCallsCounted(t *testing.T) {
	refusals.Refused.Reset()
	client, conn := rbacServer(t, &translate.Authz{
		Deny:  []translate.AuthzRule{{Name: "ns/echo/0", Methods: []string{"/grpc.testing.TestService/EmptyCall"}}},
		Allow: []translate.AuthzRule{{Name: "ns/echo/1", Methods: []string{"/grpc.testing.TestService/UnaryCall"}}},
	})
	ctx := t.Context()
	for range 3 {
		if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("EmptyCall: %v, want PermissionDenied", err)
		}
	}
	for _, m := range []string{"/made.Up/M", "/grpc.testing.TestService/Made"} {
		if err := conn.Invoke(ctx, m, &testgrpc.Empty{}, &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want Unimplemented", m, err)
		}
	}
	if series := testutil.CollectAndCount(refusals.Refused); series != 1 {
		t.Errorf("%d series, want 1: EmptyCall's (served and unknown calls are not counted)", series)
	}
	count := func(method, rule string) float64 {
		return testutil.ToFloat64(refusals.Refused.WithLabelValues("ns/echo", method, "", rule))
	}
	// rbacServer made one EmptyCall before these three.
	if got := count("/grpc.testing.TestService/EmptyCall", "ns/echo/0"); got != 4 {
		t.Errorf("%v EmptyCalls counted as refused by rule ns/echo/0, want 4", got)
	}
}

// BenchmarkRBACPerCall: the cost of authorization on a grpc-go xDS server, per call, as
// the control plane configures it: unary calls over one connection (plaintext, to measure
// the RBAC filter and not TLS) to a server without a policy, and to one whose service a
// 10-rule policy protects (9 Deny rules on callers that do not match, then the Allow rule
// that lets the call in: every rule is evaluated). A method the policy does not allow is
// refused first, to show it is in force.
func BenchmarkRBACPerCall(b *testing.B) {
	var tenRules translate.Authz
	for i := range 9 {
		tenRules.Deny = append(tenRules.Deny, translate.AuthzRule{Name: fmt.Sprintf("ns/echo/%d", i),
			Principals: []translate.Principal{{Exact: fmt.Sprintf("spiffe://cluster.local/ns/attic/sa/intruder-%d", i)}}})
	}
	tenRules.Allow = []translate.AuthzRule{{Name: "ns/echo/9", Methods: []string{"/grpc.testing.TestService/UnaryCall"}}}
	for _, tc := range []struct {
		name  string
		authz *translate.Authz
	}{{"no-policy", nil}, {"10-rules", &tenRules}} {
		b.Run(tc.name, func(b *testing.B) {
			client, _ := rbacServer(b, tc.authz)
			ctx := b.Context()
			for b.Loop() {
				if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rbacServer runs a grpc-go xDS server of service ns/echo on a local port, configured by
// an xDS server of this package from a model with authz, and returns a plain gRPC client
// of it.
func rbacServer(b testing.TB, authz *translate.Authz) (testgrpc.TestServiceClient, *grpc.ClientConn) {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := uint32(lis.Addr().(*net.TCPAddr).Port)
	md := &model{tr: translate.NewTranslator(), m: &translate.Model{Cluster: "a", Network: "net-1", TrustDomain: "cluster.local",
		Services: []translate.Service{{Namespace: "ns", Name: "echo", Local: true, Ports: []translate.Port{{Name: "grpc", Port: 9000}},
			Endpoints: []translate.Endpoint{{Cluster: "a", Network: "net-1", Address: "127.0.0.1", Ports: []translate.Port{{Name: "grpc", Port: port}}, Ready: true}},
			Authz:     authz}}}}
	s := startServer(b, md)
	boot, err := bootstrap.JSON(bootstrap.Options{XDSAddress: s.Addr(), NodeID: "echo-" + strconv.Itoa(int(port)) + ".ns", Cluster: "a"})
	if err != nil {
		b.Fatal(err)
	}
	serving := make(chan error, 1)
	srv, err := grpcxds.NewGRPCServer(grpc.Creds(insecure.NewCredentials()), grpcxds.BootstrapContentsForTesting(boot),
		grpcxds.ServingModeCallback(func(_ net.Addr, args grpcxds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				select {
				case serving <- nil:
				default:
				}
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	testgrpc.RegisterTestServiceServer(srv, unaryEcho{})
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		b.Fatal("the xDS server did not serve within 30 s")
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	// The first call proves the path, and that the policy lets the benchmark's calls in.
	err = testbed.Poll(b.Context(), 10*time.Second, "the first call served", func() error {
		_, err := client.UnaryCall(b.Context(), &testgrpc.SimpleRequest{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// A method the policy does not allow shows the policy is in force (without one, the
	// server answers Unimplemented).
	want := codes.Unimplemented
	if authz != nil {
		want = codes.PermissionDenied
	}
	if _, err := client.EmptyCall(b.Context(), &testgrpc.Empty{}); status.Code(err) != want {
		b.Fatalf("EmptyCall: %v, want %s", err, want)
	}
	return client, conn
}
