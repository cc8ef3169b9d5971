package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// GatewayServiceAccount is the service account of the east-west gateway's identity
// (spiffe://<trust domain>/ns/<mesh namespace>/sa/meshfed-eastwest-gateway).
const GatewayServiceAccount = "meshfed-eastwest-gateway"

// Credentials are the xDS server's side of mTLS (ca.TLSSource in the operator).
type Credentials interface {
	// Certificate is the server's certificate (tls.Config.GetCertificate).
	Certificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// VerifyClient checks a client's chain and returns its SPIFFE ID.
	VerifyClient(context.Context, tls.ConnectionState) (*url.URL, error)
}

// Security makes the xDS server require mTLS with a certificate of the federation and
// take what a client may be from its certificate, not from what its node claims.
type Security struct {
	TLS Credentials
	// TrustDomain is the mesh's trust domain now.
	TrustDomain func(context.Context) (string, error)
	// MeshNamespace is where the gateway's identity is.
	MeshNamespace string
	// GroupOf is the group a workload's pod is in, from how it was injected (GroupEnvoy
	// for the envoy template, else GroupGRPC; GroupGRPC for a workload that is no pod).
	GroupOf func(ctx context.Context, namespace, pod string) (string, error)
	// MaxConnections caps the connections served at once; MaxConnectionAge closes a
	// connection after a while (gracefully), so that clients spread over new replicas.
	MaxConnections   int
	MaxConnectionAge time.Duration
}

var refusedNodes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meshfed_xds_refused_total",
	Help: "xDS streams refused because the node a client claimed disagrees with its certificate, by reason.",
}, []string{"reason"})

func init() {
	crmetrics.Registry.MustRegister(refusedNodes)
}

// serverOptions are the gRPC server options of a secured xDS server.
func (sec *Security) serverOptions() []grpc.ServerOption {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: sec.TLS.Certificate,
		ClientAuth:     tls.RequireAnyClientCert,
		// The bundle changes with a root rotation: the chain is verified against the one
		// held at the time of the handshake.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := sec.TLS.VerifyClient(context.Background(), cs)
			return err
		},
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(cfg)),
		grpc.MaxConcurrentStreams(16), // an agent opens its app's stream and a probe
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: sec.MaxConnectionAge, MaxConnectionAgeGrace: time.Minute}),
	}
}

// callerOf is the SPIFFE ID of a stream's client (verified in the handshake).
func callerOf(ctx context.Context) *url.URL {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || len(info.State.PeerCertificates[0].URIs) != 1 {
		return nil
	}
	return info.State.PeerCertificates[0].URIs[0]
}

// refusal is a node its client's certificate does not allow.
type refusal struct{ reason, message string }

func (r *refusal) Error() string { return r.message }

// Authorize is the group a node may be in when its client holds the certificate of id,
// or why it may not connect: the gateway's identity makes a gateway node; any other is a
// workload, whose node ID must be <pod>.<its namespace> and whose group is what groupOf
// says of that pod (its injection template), whatever its metadata claims.
func Authorize(id *url.URL, node *corev3.Node, trustDomain, meshNamespace string, groupOf func(namespace, pod string) (string, error)) (string, error) {
	if id == nil {
		return "", &refusal{"NoIdentity", "the client presented no SPIFFE ID"}
	}
	ns, sa, ok := spiffePath(id)
	if !ok || id.Host != trustDomain {
		return "", &refusal{"ForeignIdentity", fmt.Sprintf("%s is not an identity of trust domain %s", id, trustDomain)}
	}
	claimed := nodeGroup(node)
	if ns == meshNamespace && sa == GatewayServiceAccount {
		if claimed == GroupEnvoy {
			return "", &refusal{"GroupMismatch", fmt.Sprintf("node %q claims to be an Envoy sidecar, but %s is the east-west gateway's", node.GetId(), id)}
		}
		return GroupGateway, nil
	}
	pod, nodeNS, found := cutLast(node.GetId(), ".")
	if !found || pod == "" || nodeNS != ns {
		return "", &refusal{"NodeMismatch", fmt.Sprintf("node %q is not <pod>.%s, the namespace of %s", node.GetId(), ns, id)}
	}
	group, err := groupOf(ns, pod)
	if err != nil {
		return "", err
	}
	if claimed != GroupGRPC && claimed != group {
		what := map[string]string{GroupGateway: "the east-west gateway", GroupEnvoy: "an Envoy sidecar"}[claimed]
		return "", &refusal{"GroupMismatch", fmt.Sprintf("node %q claims to be %s, but %s is a workload's whose pod was injected as %s", node.GetId(), what, id, group)}
	}
	return group, nil
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// spiffePath reads /ns/<namespace>/sa/<service account>.
func spiffePath(id *url.URL) (string, string, bool) {
	parts := strings.Split(id.Path, "/")
	if id.Scheme != "spiffe" || len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return "", "", false
	}
	return parts[2], parts[4], true
}

// admit checks a request's node against its stream's client, and writes the group the
// client may be into the node, where the snapshot cache reads it.
func (s *Server) admit(streamID int64, node *corev3.Node) error {
	s.mu.Lock()
	id := s.callers[streamID]
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td, err := s.security.TrustDomain(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "the control plane cannot read its Mesh: %v", err)
	}
	group, err := Authorize(id, node, td, s.security.MeshNamespace, func(namespace, pod string) (string, error) {
		return s.security.GroupOf(ctx, namespace, pod)
	})
	if r := (*refusal)(nil); errors.As(err, &r) {
		refusedNodes.WithLabelValues(r.reason).Inc()
		s.log.Info("refused an xDS stream: the node disagrees with the client's certificate", "reason", r.reason, "node", node.GetId(), "identity", fmt.Sprint(id))
		return status.Error(codes.PermissionDenied, r.message)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "the control plane cannot check node %q: %v", node.GetId(), err)
	}
	if node.Metadata == nil {
		node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	if node.Metadata.Fields == nil {
		node.Metadata.Fields = map[string]*structpb.Value{}
	}
	node.Metadata.Fields[NodeProxyField] = structpb.NewStringValue(group)
	return nil
}
