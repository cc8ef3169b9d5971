package gateway

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/eastwest-gateway/sni"
)

// Refusal reasons, the values of the reason label.
const (
	ReasonNotTLS         = "not_tls"
	ReasonNotClientHello = "not_client_hello"
	ReasonTooLarge       = "too_large"
	ReasonTruncated      = "truncated"
	ReasonMalformed      = "malformed"
	ReasonNoSNI          = "no_sni"
	ReasonTimeout        = "hello_timeout"
	ReasonNothingSent    = "nothing_sent"
	ReasonUnknownSNI     = "unknown_sni"
	ReasonNoEndpoints    = "no_endpoints"
	ReasonDialFailed     = "dial_failed"
	ReasonNoConfig       = "no_config"
	ReasonReadFailed     = "read_failed"
)

// Gateway routes TLS connections by server name to backends, without terminating TLS.
type Gateway struct {
	// HelloTimeout bounds the wait for a whole ClientHello (slow or silent clients).
	HelloTimeout time.Duration
	// DialTimeout bounds the connection to a backend.
	DialTimeout time.Duration
	// MaxHello bounds the ClientHello.
	MaxHello int
	// MaxConnections caps the client connections open at once (0: no cap). At the cap the
	// gateway stops accepting: new connections wait in the listen backlog, then the
	// kernel's SYN queue, instead of being taken and dropped.
	MaxConnections int
	// IdleTimeout closes a routed pair after that long without a byte either way (0:
	// never).
	IdleTimeout time.Duration
	Log         logr.Logger

	table   atomic.Pointer[Table]
	open    atomic.Int64 // client connections accepted and not finished
	metrics *metrics
}

// Defaults of the gateway's bounds.
const (
	DefaultMaxConnections = 20000
	DefaultIdleTimeout    = time.Hour // Envoy's tcp_proxy default
)

// New returns a gateway with its metrics registered on reg.
func New(log logr.Logger, reg prometheus.Registerer) *Gateway {
	g := &Gateway{HelloTimeout: 5 * time.Second, DialTimeout: 2 * time.Second, MaxHello: sni.DefaultMaxHello,
		MaxConnections: DefaultMaxConnections, IdleTimeout: DefaultIdleTimeout, Log: log}
	g.metrics = newMetrics(reg, func() float64 { return float64(g.open.Load()) })
	return g
}

// sweepEvery is how often the gateway looks for ClientHello and connect deadlines, and, at
// the connection cap, whether it may accept again.
const sweepEvery = 50 * time.Millisecond

// idleSweepEvery is how often the gateway looks for idle pairs: a pair is closed within a
// quarter of the idle timeout after it expires, and never looked for oftener than sweeps.
func idleSweepEvery(idle time.Duration) time.Duration {
	return min(max(idle/4, sweepEvery), 10*time.Second)
}

// reserve counts a connection about to be accepted, unless the gateway holds as many as
// it may. (A reservation whose accept finds nothing is given back.)
func (g *Gateway) reserve() bool {
	for {
		n := g.open.Load()
		if g.MaxConnections > 0 && n >= int64(g.MaxConnections) {
			return false
		}
		if g.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// SetTable makes t the routing table for new connections.
func (g *Gateway) SetTable(t *Table) {
	g.table.Store(t)
	g.metrics.routes.Set(float64(len(t.routes)))
}

// Rejected counts a configuration the xDS client refused.
func (g *Gateway) Rejected(error) { g.metrics.rejected.Inc() }

// Ready tells whether the gateway has a configuration.
func (g *Gateway) Ready() bool { return g.table.Load() != nil }

// pick chooses a backend for a server name, or says why there is none: the reason to
// refuse the connection with.
func (g *Gateway) pick(serverName string) (backend, reason string) {
	t := g.table.Load()
	backend, ok := t.Lookup(serverName)
	switch {
	case t == nil:
		return "", ReasonNoConfig
	case !ok && t.Routed(serverName):
		return "", ReasonNoEndpoints
	case !ok:
		return "", ReasonUnknownSNI
	}
	return backend, ""
}

// helloReason is the refusal reason of a ClientHello that could not be read or parsed.
func helloReason(err error) string {
	switch {
	case errors.Is(err, sni.ErrNotTLS):
		return ReasonNotTLS
	case errors.Is(err, sni.ErrNotClientHello):
		return ReasonNotClientHello
	case errors.Is(err, sni.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, sni.ErrNoSNI):
		return ReasonNoSNI
	case errors.Is(err, sni.ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, io.EOF):
		return ReasonNothingSent
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, sni.ErrTruncated):
		return ReasonTruncated
	}
	return ReasonReadFailed
}
