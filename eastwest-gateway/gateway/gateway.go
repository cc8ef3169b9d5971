package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
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
	Log      logr.Logger

	table   atomic.Pointer[Table]
	metrics *metrics

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New returns a gateway with its metrics registered on reg.
func New(log logr.Logger, reg prometheus.Registerer) *Gateway {
	return &Gateway{HelloTimeout: 5 * time.Second, DialTimeout: 2 * time.Second, MaxHello: sni.DefaultMaxHello,
		Log: log, metrics: newMetrics(reg), conns: map[net.Conn]struct{}{}}
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

// Serve accepts connections on ln until ctx ends; then it stops accepting and lets the
// connections in progress finish for up to drain, and closes what is left.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return g.drain(drain)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		g.track(c, true)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.track(c, false)
			g.handle(c)
		}()
	}
}

func (g *Gateway) track(c net.Conn, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if open {
		g.conns[c] = struct{}{}
	} else {
		delete(g.conns, c)
	}
	g.metrics.active.Set(float64(len(g.conns)))
}

func (g *Gateway) drain(grace time.Duration) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.mu.Lock()
		for c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		<-done
	}
	return nil
}

// handle reads the ClientHello, picks a backend and splices the two connections.
func (g *Gateway) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(g.HelloTimeout))
	name, raw, err := sni.Read(c, g.MaxHello)
	if err != nil {
		g.refuse(c, helloReason(err), "", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	t := g.table.Load()
	backend, ok := t.Lookup(name)
	switch {
	case t == nil:
		g.refuse(c, ReasonNoConfig, name, nil)
		return
	case !ok && t.Routed(name):
		g.refuse(c, ReasonNoEndpoints, name, nil)
		return
	case !ok:
		g.refuse(c, ReasonUnknownSNI, name, nil)
		return
	}
	b, err := net.DialTimeout("tcp", backend, g.DialTimeout)
	if err != nil {
		g.refuse(c, ReasonDialFailed, name, err)
		return
	}
	defer b.Close()
	if _, err := b.Write(raw); err != nil {
		g.refuse(c, ReasonDialFailed, name, err)
		return
	}
	g.metrics.routed(name)
	g.metrics.bytesIn.Add(float64(len(raw)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(b, c) // splice(2) between TCP connections on Linux
		g.metrics.bytesIn.Add(float64(n))
		closeWrite(b)
	}()
	n, _ := io.Copy(c, b)
	g.metrics.bytesOut.Add(float64(n))
	closeWrite(c)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	_ = c.Close()
}

func (g *Gateway) refuse(c net.Conn, reason, name string, err error) {
	g.metrics.refused(reason)
	g.Log.V(1).Info("connection refused", "reason", reason, "serverName", name, "remote", c.RemoteAddr().String(), "error", err)
}

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
