package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meshfed/meshfed/operator/internal/translate"
)

// Node groups: each gets one snapshot. A node says it is an Envoy sidecar with the node
// metadata field NodeProxyField = "envoy"; any other node is a proxyless gRPC node.
const (
	GroupGRPC      = "grpc"
	GroupEnvoy     = "envoy"
	GroupGateway   = "gateway"
	NodeProxyField = "meshfed.io/proxy"
)

// DefaultDebounce is the push debounce window when the Mesh sets none.
const DefaultDebounce = 100 * time.Millisecond

// maxDelayFactor bounds how long a stream of changes can hold a push back: at most this
// many debounce windows.
const maxDelayFactor = 10

// Config is what the server serves and how.
type Config struct {
	Resources *translate.Resources
	// Envoy is the Envoy sidecars' configuration; nil while no Envoy node is connected
	// (see Server.EnvoyConnected).
	Envoy *translate.EnvoyResources
	// Gateway is the east-west gateways' configuration; nil while none is connected.
	Gateway *translate.Resources
	// Address is where to serve ADS (host:port).
	Address string
	// Debounce is the push debounce window.
	Debounce time.Duration
}

// BuildFunc reads the member's objects and returns the configuration to serve.
type BuildFunc func(ctx context.Context) (*Config, error)

// typeOrder lists the resource types in the snapshot, in the order of
// translate.Resources.Versions.
var typeOrder = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

// groupTypes are the types of a group's snapshot: typeOrder, then the Envoy nodes' secrets.
var groupTypes = append(slices.Clone(typeOrder), resource.SecretType)

// Server is the member's xDS server and push pipeline.
type Server struct {
	log   logr.Logger
	build BuildFunc
	// checker checks the gRPC configurations, validating only the resources new since
	// the last push.
	checker  translate.Checker
	cache    cachev3.SnapshotCache
	kick     chan struct{}
	onChange func()

	mu        sync.Mutex
	debounce  time.Duration
	firstKick time.Time
	versions  map[resource.Type]string
	// changedAt is when the change behind each type's current version was first seen.
	changedAt map[resource.Type]time.Time
	version   string
	lastErr   error
	streams   map[int64]*stream
	// seen are the groups other than gRPC that a node of has connected; groupVer their
	// served versions by type (typeOrder, then secrets).
	seen     map[string]bool
	groupVer map[string][5]string
	// served is the gRPC configuration served last, retired clusters included; retired
	// are the clusters it still serves that the configuration dropped (retire.go).
	served    *translate.Resources
	retired   map[string]retiredCluster
	retention time.Duration

	// security, when set, requires mTLS and admits nodes by their client's certificate;
	// callers are the clients' SPIFFE IDs by stream.
	security *Security
	callers  map[int64]*url.URL

	lisMu    sync.Mutex
	listener net.Listener
	grpc     *grpc.Server
	addr     string
}

// stream is one connected proxy.
type stream struct {
	node  string
	group string
	acked map[string]string // type → version ACKed
}

// NewServer returns a server that builds its configuration with build; onChange (may be
// nil) is called when the snapshot version or the number of proxies changes.
func NewServer(log logr.Logger, build BuildFunc, onChange func()) *Server {
	s := &Server{log: log, build: build, kick: make(chan struct{}, 1), onChange: onChange, debounce: DefaultDebounce,
		versions: map[resource.Type]string{}, changedAt: map[resource.Type]time.Time{}, streams: map[int64]*stream{},
		seen: map[string]bool{}, groupVer: map[string][5]string{}, retired: map[string]retiredCluster{}, retention: maxRetention,
		callers: map[int64]*url.URL{}}
	s.cache = newSharedCache(cachev3.NewSnapshotCache(false, groupHash{}, nil))
	return s
}

// groupHash puts every node in its group: the snapshot is the same for all nodes of a
// group in the member.
type groupHash struct{}

func (groupHash) ID(n *corev3.Node) string { return nodeGroup(n) }

func nodeGroup(n *corev3.Node) string {
	switch g := n.GetMetadata().GetFields()[NodeProxyField].GetStringValue(); g {
	case GroupEnvoy, GroupGateway:
		return g
	}
	return GroupGRPC
}

// EnvoyConnected tells whether an Envoy node has connected, so that builds include the
// Envoy configuration.
func (s *Server) EnvoyConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[GroupEnvoy]
}

// GatewayConnected tells whether an east-west gateway has connected, so that builds
// include its configuration.
func (s *Server) GatewayConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[GroupGateway]
}

// setDebounce sets the push debounce window.
func (s *Server) setDebounce(d time.Duration) {
	if d <= 0 {
		d = DefaultDebounce
	}
	s.mu.Lock()
	s.debounce = d
	s.mu.Unlock()
}

// Trigger says that something the configuration depends on changed.
func (s *Server) Trigger() {
	s.mu.Lock()
	if s.firstKick.IsZero() {
		s.firstKick = time.Now()
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Status is what the Mesh reports of the control plane.
type Status struct {
	Version string
	Proxies int
	// Err is why the latest configuration was not served (nil when it was).
	Err error
}

// Status returns the served version, the connected proxies and the last build error.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Version: s.version, Proxies: len(s.streams), Err: s.lastErr}
}

// NeedLeaderElection is false: every replica of the operator serves xDS.
func (s *Server) NeedLeaderElection() bool { return false }

// Start runs the push pipeline until ctx ends (a manager.Runnable). It pushes once at
// start.
func (s *Server) Start(ctx context.Context) error {
	s.Trigger()
	defer s.stopListening()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		s.mu.Lock()
		window, first := s.debounce, s.firstKick
		s.mu.Unlock()
		// Coalesce: wait until no change came for a window, or the longest delay passed.
		deadline := first.Add(window * maxDelayFactor)
		for quiet := false; !quiet; {
			wait := min(window, time.Until(deadline))
			if wait <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-s.kick:
			case <-time.After(wait):
				quiet = true
			}
		}
		s.mu.Lock()
		changedAt := s.firstKick
		s.firstKick = time.Time{}
		s.mu.Unlock()
		s.Push(ctx, changedAt)
	}
}

// Push builds, checks and serves the configuration now; changedAt is when the change
// behind it happened (for the convergence metric).
func (s *Server) Push(ctx context.Context, changedAt time.Time) {
	start := time.Now()
	cfg, err := s.build(ctx)
	if err == nil {
		s.setDebounce(cfg.Debounce)
		if cfg.Address != "" {
			err = s.Listen(cfg.Address)
		}
	}
	if err == nil {
		err = s.checker.Check(cfg.Resources)
		if err == nil && cfg.Envoy != nil {
			err = translate.CheckEnvoy(cfg.Envoy)
		}
		if err == nil && cfg.Gateway != nil {
			err = translate.Check(cfg.Gateway)
		}
		if err != nil {
			configErrors.Inc()
			err = fmt.Errorf("the new configuration fails its checks and is not served: %w", err)
		}
	}
	if err != nil {
		s.log.Error(err, "xDS configuration not updated; proxies keep the last good one")
		s.setErr(err)
		return
	}
	buildSeconds.Observe(time.Since(start).Seconds())
	if e := cfg.Envoy; e != nil {
		s.setGroup(ctx, GroupEnvoy, &e.Resources, e.Secrets, e.SecretsVersion)
	}
	if cfg.Gateway != nil {
		s.setGroup(ctx, GroupGateway, cfg.Gateway, nil, "")
	}
	if changed := s.set(ctx, cfg.Resources, changedAt); changed && s.onChange != nil {
		s.onChange()
	}
}

func (s *Server) setErr(err error) {
	s.mu.Lock()
	changed := (s.lastErr == nil) != (err == nil)
	s.lastErr = err
	s.mu.Unlock()
	if changed && s.onChange != nil {
		s.onChange()
	}
}

// set serves res, with the clusters it drops still retired (retire.go), if any type
// changed; a type's version moves only when its content does.
func (s *Server) set(ctx context.Context, res *translate.Resources, changedAt time.Time) bool {
	s.mu.Lock()
	res = s.withRetired(res, time.Now())
	s.served = res
	s.mu.Unlock()
	byType := map[resource.Type][]types.Resource{}
	for _, r := range res.Listeners {
		byType[resource.ListenerType] = append(byType[resource.ListenerType], r)
	}
	for _, r := range res.Routes {
		byType[resource.RouteType] = append(byType[resource.RouteType], r)
	}
	for _, r := range res.Clusters {
		byType[resource.ClusterType] = append(byType[resource.ClusterType], r)
	}
	for _, r := range res.Endpoints {
		byType[resource.EndpointType] = append(byType[resource.EndpointType], r)
	}
	snap := &cachev3.Snapshot{}
	all := sha256.New()
	s.mu.Lock()
	changed := false
	for i, typ := range typeOrder {
		v := res.Versions[i]
		all.Write([]byte(v))
		if v != s.versions[typ] {
			changed = true
			s.versions[typ] = v
			s.changedAt[typ] = changedAt
		}
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, byType[typ])
	}
	s.lastErr = nil
	if changed {
		s.version = hex.EncodeToString(all.Sum(nil))[:16]
	}
	s.mu.Unlock()
	if !changed {
		return false
	}
	if err := s.cache.SetSnapshot(ctx, GroupGRPC, snap); err != nil {
		s.log.Error(err, "set xDS snapshot")
		return false
	}
	snapshots.Inc()
	return true
}

// setGroup serves a node group's snapshot when it changed.
func (s *Server) setGroup(ctx context.Context, group string, r *translate.Resources, secrets []*tlsv3.Secret, secretsVersion string) {
	versions := [5]string{r.Versions[0], r.Versions[1], r.Versions[2], r.Versions[3], secretsVersion}
	s.mu.Lock()
	same := versions == s.groupVer[group]
	s.groupVer[group] = versions
	s.mu.Unlock()
	if same {
		return
	}
	snap := &cachev3.Snapshot{}
	lists := [][]types.Resource{listOf(r.Listeners), listOf(r.Routes), listOf(r.Clusters), listOf(r.Endpoints), listOf(secrets)}
	for i, typ := range groupTypes {
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(versions[i], lists[i])
	}
	if err := s.cache.SetSnapshot(ctx, group, snap); err != nil {
		s.log.Error(err, "set an xDS snapshot", "group", group)
	}
}

func listOf[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

// SetSecurity makes the server require mTLS (before Listen). The operator always sets
// it; tests of the push pipeline alone may leave it out.
func (s *Server) SetSecurity(sec *Security) { s.security = sec }

// Listen serves ADS on addr, replacing a listener on another address.
func (s *Server) Listen(addr string) error {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	if s.addr == addr && s.listener != nil {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("xDS server on %s: %w", addr, err)
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	opts := []grpc.ServerOption{
		// Proxyless clients ping every 10 s at most; allow it so they can detect dead
		// connections without being told too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if s.security != nil {
		opts = append(opts, s.security.serverOptions()...)
		if s.security.MaxConnections > 0 {
			lis = netutil.LimitListener(lis, s.security.MaxConnections)
		}
	} else {
		opts = append(opts, grpc.MaxConcurrentStreams(1<<20))
	}
	gs := grpc.NewServer(opts...)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), s.cache, s.callbacks()))
	s.listener, s.grpc, s.addr = lis, gs, addr
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error(err, "xDS server stopped", "address", addr)
		}
	}()
	s.log.Info("serving xDS", "address", lis.Addr().String())
	return nil
}

// Addr is the address the server listens on ("" before Listen).
func (s *Server) Addr() string {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

func (s *Server) stopListening() {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	if s.grpc != nil {
		s.grpc.Stop()
		s.grpc, s.listener, s.addr = nil, nil, ""
	}
}
