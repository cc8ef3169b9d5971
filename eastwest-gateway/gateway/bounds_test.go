package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The gateway faces other networks: what any client there can make it hold is bounded.

// startBounded serves a gateway routing echoSNI to a, set up by bound, on a loopback port.
func startBounded(t *testing.T, serve func(*Gateway, context.Context, net.Listener, time.Duration) error, a *backend, bound func(*Gateway)) (*Gateway, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	g := New(logr.Discard(), prometheus.NewRegistry())
	bound(g)
	g.SetTable(&Table{routes: map[string]*route{echoSNI: {cluster: echoSNI, backends: []string{a.addr}}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(g, ctx, ln, time.Second) }()
	return g, ln.Addr().String()
}

// TestAConnectionFloodIsHeldAtTheCap: three times --max-connections clients that connect
// and send nothing never make the gateway hold more than the cap; the rest wait in the
// listen backlog (not taken and dropped) and are taken as the first ones time out.
func TestAConnectionFloodIsHeldAtTheCap(t *testing.T) {
	for path, serve := range dataPaths {
		t.Run(path, func(t *testing.T) {
			const maxConns, flood = 20, 60
			a := startBackend(t, "a")
			g, gw := startBounded(t, serve, a, func(g *Gateway) { g.MaxConnections, g.HelloTimeout = maxConns, 300*time.Millisecond })
			for range flood {
				c, err := net.DialTimeout("tcp", gw, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			timedOut := g.metrics.refusals.WithLabelValues(ReasonTimeout)
			deadline := time.Now().Add(20 * time.Second)
			peak := int64(0)
			for testutil.ToFloat64(timedOut) < flood {
				if time.Now().After(deadline) {
					t.Fatalf("%v of %d silent connections timed out", testutil.ToFloat64(timedOut), flood)
				}
				peak = max(peak, g.open.Load())
				time.Sleep(time.Millisecond) // sampling the count, not waiting for it
			}
			if peak > maxConns {
				t.Errorf("the gateway held %d connections at once, over its cap of %d", peak, maxConns)
			}
			if testutil.ToFloat64(g.metrics.atCap) == 0 {
				t.Error("reaching the cap was not counted")
			}
			if name, err := call(gw, echoSNI, a); err != nil || name != "a" {
				t.Errorf("good traffic after the flood: %q %v", name, err)
			}
		})
	}
}

// TestAnIdlePairIsClosed: a routed connection that moves no byte for --idle-timeout is
// closed and counted; one that keeps talking is not.
func TestAnIdlePairIsClosed(t *testing.T) {
	for path, serve := range dataPaths {
		t.Run(path, func(t *testing.T) {
			const idle = 400 * time.Millisecond
			a := startBackend(t, "a")
			g, gw := startBounded(t, serve, a, func(g *Gateway) { g.IdleTimeout = idle })
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", gw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			talk := func() error {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := fmt.Fprintf(conn, "hi\n"); err != nil {
					return err
				}
				_, err := r.ReadString('\n')
				return err
			}
			// Talking every idle/4 for three idle timeouts keeps the pair.
			var lastTalk time.Time // before the last exchange: the gateway saw its bytes later
			for range 12 {
				time.Sleep(idle / 4) // the client's pace
				lastTalk = time.Now()
				if err := talk(); err != nil {
					t.Fatalf("a pair in use was closed: %v", err)
				}
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = r.ReadString('\n')
			if errors.Is(err, os.ErrDeadlineExceeded) || err == nil {
				t.Fatalf("the silent pair was not closed: %v", err)
			}
			if waited := time.Since(lastTalk); waited < idle {
				t.Errorf("closed %s after the last byte, before the idle timeout of %s", waited, idle)
			}
			eventually(t, "the idle close counted", func() error {
				if v := testutil.ToFloat64(g.metrics.idleClosed); v != 1 {
					return fmt.Errorf("%v idle closes", v)
				}
				return nil
			})
		})
	}
}
