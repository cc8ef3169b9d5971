package clusters

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/transport"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// ErrClusterNotConnected means the member cannot be used now: its kubeconfig is wrong, its
// API server does not answer, or its cache has not synced yet. Callers report it and wait
// for the registry's next change notification instead of retrying hot.
var ErrClusterNotConnected = errors.New("cluster not connected")

var (
	memberConnected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshfed_member_connected",
		Help: "1 while the hub reaches the member's API server, else 0.",
	}, []string{"federation", "member"})
	memberProbeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_member_probe_failures_total",
		Help: "Health probes of a member's API server that failed.",
	}, []string{"federation", "member"})
	memberTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_member_connection_changes_total",
		Help: "Times a member went from connected to disconnected or back.",
	}, []string{"federation", "member", "connected"})
)

func init() {
	crmetrics.Registry.MustRegister(memberConnected, memberProbeFailures, memberTransitions)
}

// Options configure a Registry.
type Options struct {
	Scheme *runtime.Scheme
	// Watch lists the kinds whose changes in a member call OnChange.
	Watch []client.Object
	// OnChange is called with the owner (the federation key) when a member's objects or
	// connection state change.
	OnChange func(owner string)
	// ProbeInterval and ProbeTimeout pace the /readyz probe; FailureThreshold failed
	// probes in a row mark the member disconnected.
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	FailureThreshold int
	// QPS and Burst of each member client.
	QPS   float32
	Burst int
	Log   logr.Logger
}

// Registry holds the members of every federation the hub serves.
type Registry struct {
	opts    Options
	mu      sync.Mutex
	members map[key]*Member
}

type key struct{ owner, name string }

// New returns an empty registry.
func New(opts Options) *Registry {
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = time.Second
	}
	if opts.ProbeTimeout == 0 {
		opts.ProbeTimeout = time.Second
	}
	if opts.FailureThreshold == 0 {
		opts.FailureThreshold = 2
	}
	if opts.OnChange == nil {
		opts.OnChange = func(string) {}
	}
	return &Registry{opts: opts, members: map[key]*Member{}}
}

// Member is one connected (or connecting) member cluster.
type Member struct {
	Name  string
	owner string
	// Namespace is the member's mesh namespace, the one its kubeconfig's context names
	// (`meshfedctl join` writes it), where the hub may write the member's meshfed-cacerts.
	Namespace string

	cluster    cluster.Cluster
	cancel     context.CancelFunc
	configHash [32]byte // of the whole kubeconfig
	identity   [32]byte // of the kubeconfig without its token
	token      *bearerToken

	mu        sync.RWMutex
	connected bool
	synced    bool
	since     time.Time // when connected last changed
	lastErr   error     // of the last probe
	watchErr  error     // why the informers are not all started
}

// Client reads from the member's cache and writes to its API server.
func (m *Member) Client() client.Client { return m.cluster.GetClient() }

// APIReader reads straight from the member's API server.
func (m *Member) APIReader() client.Reader { return m.cluster.GetAPIReader() }

// State is a member's health as the registry sees it.
type State struct {
	Connected bool
	// Synced is true once the member's cache has listed everything at least once; before
	// that the hub knows nothing of the member's exports.
	Synced bool
	// Since is when Connected last changed.
	Since time.Time
	// Err says why the member is not connected, or else why it is not synced.
	Err error
}

// State returns the member's health.
func (m *Member) State() State {
	m.mu.RLock()
	defer m.mu.RUnlock()
	err := m.lastErr
	if err == nil {
		err = m.watchErr
	}
	return State{Connected: m.connected, Synced: m.synced, Since: m.since, Err: err}
}

// setWatchErr records why the informers are not started and reports whether that changed.
func (m *Member) setWatchErr(err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := errString(err) != errString(m.watchErr)
	m.watchErr = err
	return changed
}

// bearerToken is a member's token. client-go asks it for the token at each request, so a
// renewed token takes over without restarting the member's cache.
type bearerToken struct{ value atomic.Pointer[string] }

func newBearerToken(token string) *bearerToken {
	b := &bearerToken{}
	b.value.Store(&token)
	return b
}

func (b *bearerToken) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: *b.value.Load(), TokenType: "Bearer"}, nil
}

// identity tells kubeconfigs apart by everything but their bearer token.
func identity(cfg *rest.Config, namespace string) [32]byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(cfg.Host), cfg.CAData, []byte(cfg.ServerName), cfg.CertData, cfg.KeyData, []byte(namespace)} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(part)))
		h.Write(part)
	}
	return [32]byte(h.Sum(nil))
}

// Connect registers the member name of owner with the given kubeconfig, replacing an
// earlier registration whose kubeconfig differs in more than its token (a new token is
// used from the next request on, keeping the member's cache). It returns at once; the
// member becomes connected and synced in the background and OnChange tells when.
func (r *Registry) Connect(owner, name string, kubeconfig []byte) (*Member, error) {
	hash := sha256.Sum256(kubeconfig)
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{owner, name}
	m, ok := r.members[k]
	if ok && m.configHash == hash {
		return m, nil
	}
	cfg, namespace, err := RestConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	id := identity(cfg, namespace)
	if ok && m.identity == id && m.token != nil && cfg.BearerToken != "" {
		m.token.value.Store(&cfg.BearerToken)
		m.configHash = hash
		return m, nil
	}
	if ok {
		m.stop()
		delete(r.members, k)
	}
	var token *bearerToken
	if cfg.BearerToken != "" {
		token = newBearerToken(cfg.BearerToken)
		cfg.BearerToken = ""
		cfg.WrapTransport = transport.TokenSourceWrapTransport(token)
	}
	cfg.QPS, cfg.Burst = r.opts.QPS, r.opts.Burst
	cfg.UserAgent = "meshfed-hub"
	cl, err := cluster.New(cfg, func(o *cluster.Options) { o.Scheme = r.opts.Scheme })
	if err != nil {
		return nil, fmt.Errorf("build a client from the kubeconfig: %w", err)
	}
	probeCfg := rest.CopyConfig(cfg)
	probeCfg.Timeout = r.opts.ProbeTimeout
	probe, err := kubernetes.NewForConfig(probeCfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m = &Member{Name: name, owner: owner, Namespace: namespace, cluster: cl, cancel: cancel, configHash: hash, identity: id, token: token,
		since: time.Now(), lastErr: errors.New("connecting")}
	notify := func() { r.opts.OnChange(owner) }
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	log := r.opts.Log.WithValues("federation", owner, "cluster", name)
	go func() {
		if err := cl.Start(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "member cache stopped")
		}
	}()
	go r.watch(ctx, m, handler, log, notify)
	go r.probeLoop(ctx, m, probe, log, notify)
	r.members[k] = m
	memberConnected.WithLabelValues(owner, name).Set(0)
	return m, nil
}

// watch starts the member's informers for every watched kind, then marks the member synced
// once they have listed. A kind the member's API server cannot map now (the server is down,
// or the kind's CRD is not installed there) is asked for again every ProbeInterval, so a
// member that was unreachable when it was registered syncs as soon as it answers.
func (r *Registry) watch(ctx context.Context, m *Member, handler toolscache.ResourceEventHandler, log logr.Logger, notify func()) {
	for _, obj := range r.opts.Watch {
		for {
			inf, err := m.cluster.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false))
			if err == nil {
				_, err = inf.AddEventHandler(handler)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if m.setWatchErr(fmt.Errorf("watch %T: %w", obj, err)) {
				notify()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.opts.ProbeInterval):
			}
		}
	}
	m.setWatchErr(nil)
	if m.cluster.GetCache().WaitForCacheSync(ctx) {
		m.mu.Lock()
		m.synced = true
		m.mu.Unlock()
		log.Info("member cache synced")
		notify()
	}
}

// probeLoop asks the member's /readyz every ProbeInterval and flips the member's state
// after FailureThreshold failures in a row, or at the first success.
func (r *Registry) probeLoop(ctx context.Context, m *Member, probe kubernetes.Interface, log logr.Logger, notify func()) {
	failures := 0
	ticker := time.NewTicker(r.opts.ProbeInterval)
	defer ticker.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
		_, err := probe.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		connected := true
		if err != nil {
			failures++
			memberProbeFailures.WithLabelValues(m.owner, m.Name).Inc()
			// One lost probe is not an outage: stay connected until the threshold.
			connected = m.State().Connected && failures < r.opts.FailureThreshold
		} else {
			failures = 0
		}
		if m.setConnected(connected, err) {
			log.Info("member connection changed", "connected", connected, "error", errString(err))
			memberTransitions.WithLabelValues(m.owner, m.Name, fmt.Sprint(connected)).Inc()
			if connected {
				memberConnected.WithLabelValues(m.owner, m.Name).Set(1)
			} else {
				memberConnected.WithLabelValues(m.owner, m.Name).Set(0)
			}
			notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// setConnected records the probe result and reports whether Connected changed.
func (m *Member) setConnected(connected bool, err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.lastErr = fmt.Errorf("API server not reachable: %w", err)
	} else {
		m.lastErr = nil
	}
	if m.connected == connected {
		return false
	}
	m.connected = connected
	m.since = time.Now()
	return true
}

// Get returns a member that is connected and synced, or ErrClusterNotConnected.
func (r *Registry) Get(owner, name string) (*Member, error) {
	r.mu.Lock()
	m, ok := r.members[key{owner, name}]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w: not registered", name, ErrClusterNotConnected)
	}
	if s := m.State(); !s.Connected || !s.Synced {
		return m, fmt.Errorf("%s: %w: %w", name, ErrClusterNotConnected, s.Err)
	}
	return m, nil
}

// Lookup returns the registered member whatever its state.
func (r *Registry) Lookup(owner, name string) (*Member, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.members[key{owner, name}]
	return m, ok
}

// Names lists the members registered for owner, sorted.
func (r *Registry) Names(owner string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for k := range r.members {
		if k.owner == owner {
			names = append(names, k.name)
		}
	}
	sort.Strings(names)
	return names
}

// Disconnect stops and forgets a member.
func (r *Registry) Disconnect(owner, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.members[key{owner, name}]; ok {
		m.stop()
		delete(r.members, key{owner, name})
		memberConnected.DeleteLabelValues(owner, name)
	}
}

func (m *Member) stop() { m.cancel() }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
