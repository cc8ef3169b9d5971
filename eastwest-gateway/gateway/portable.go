package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfed/meshfed/eastwest-gateway/sni"
)

// servePortable is the data path where there is no epoll: a goroutine per connection over
// Go's net package, each reading the ClientHello, routing it like the event loops do and
// copying both ways. It keeps the loops' behaviour (refusal reasons, deadlines, half-close,
// drain, metrics) at a higher cost per connection. Serve uses it on systems other than
// Linux; on Linux it is tested against the same bad input as the loops.
func (g *Gateway) servePortable(ctx context.Context, ln net.Listener, drain time.Duration) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		// At the connection cap, stop accepting (back-pressure, as the event loops do).
		for !g.reserve() && ctx.Err() == nil {
			g.metrics.atCap.Inc()
			select {
			case <-ctx.Done():
			case <-time.After(sweepEvery):
			}
		}
		if ctx.Err() != nil {
			break
		}
		c, aerr := ln.Accept()
		if aerr != nil {
			g.open.Add(-1)
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			g.proxy(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	// Connections in progress get up to drain to finish; what is left is closed.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(drain):
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		<-finished
	}
	return err
}

// proxy serves one client connection: ClientHello, route, dial, then bytes both ways until
// both end (a half-closed connection stays half-closed) or one fails.
func (g *Gateway) proxy(client net.Conn) {
	defer g.open.Add(-1)
	defer client.Close()
	hello, name, err := g.readHello(client)
	if err != nil {
		g.refusePortable(helloReason(err), name, err)
		return
	}
	backend, reason := g.pick(name)
	if reason != "" {
		g.refusePortable(reason, name, nil)
		return
	}
	up, err := net.DialTimeout("tcp", backend, g.DialTimeout)
	if err != nil {
		g.refusePortable(ReasonDialFailed, name, err)
		return
	}
	defer up.Close()
	g.metrics.routed(name)
	if _, err := up.Write(hello); err != nil {
		return
	}
	g.metrics.bytesIn.Add(float64(len(hello)))
	var last atomic.Int64 // when a byte last moved, either way (Unix nanoseconds)
	last.Store(time.Now().UnixNano())
	if g.IdleTimeout > 0 {
		done := make(chan struct{})
		defer close(done)
		go g.closeWhenIdle(done, &last, client, up)
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		copyHalf(up, client, g.metrics.bytesIn, &last)
	}()
	copyHalf(client, up, g.metrics.bytesOut, &last)
	<-upDone
}

// closeWhenIdle closes both connections of a pair once no byte moved for the idle
// timeout, until done.
func (g *Gateway) closeWhenIdle(done <-chan struct{}, last *atomic.Int64, conns ...net.Conn) {
	tick := time.NewTicker(idleSweepEvery(g.IdleTimeout))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			if now.Sub(time.Unix(0, last.Load())) >= g.IdleTimeout {
				g.metrics.idleClosed.Inc()
				for _, c := range conns {
					c.Close()
				}
				return
			}
		}
	}
}

// touching notes in last when bytes are read.
type touching struct {
	io.Reader
	last *atomic.Int64
}

func (t touching) Read(b []byte) (int, error) {
	n, err := t.Reader.Read(b)
	if n > 0 {
		t.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// copyHalf copies one way of a pair: from src until it ends, then ends dst's writing. A
// failure either way ends the pair: both connections are closed, so the other way ends too.
func copyHalf(dst, src net.Conn, counted interface{ Add(float64) }, last *atomic.Int64) {
	n, err := io.Copy(dst, touching{src, last})
	counted.Add(float64(n))
	if err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// readHello reads from the client until what it sent holds a whole ClientHello, within
// the hello timeout, and returns what it read and the server name.
func (g *Gateway) readHello(client net.Conn) (hello []byte, name string, err error) {
	_ = client.SetReadDeadline(time.Now().Add(g.HelloTimeout))
	defer func() { _ = client.SetReadDeadline(time.Time{}) }()
	limit := g.MaxHello + 1024 // the ClientHello and its record headers
	buf := make([]byte, 4096)
	for {
		name, err = sni.Parse(hello, g.MaxHello)
		more := errors.Is(err, sni.ErrTruncated) || errors.Is(err, io.EOF)
		if !more {
			return hello, name, err
		}
		if len(hello) >= limit {
			return hello, "", sni.ErrTooLarge
		}
		n, rerr := client.Read(buf[:min(len(buf), limit-len(hello))])
		hello = append(hello, buf[:n]...)
		if rerr != nil && n == 0 {
			if errors.Is(rerr, io.EOF) {
				return hello, "", err // what the client sent before it ended
			}
			return hello, "", rerr
		}
	}
}

func (g *Gateway) refusePortable(reason, name string, err error) {
	g.metrics.refused(reason)
	g.Log.V(1).Info("connection refused", "reason", reason, "serverName", name, "error", err)
}
