package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshfed/meshfed/testbed"
)

const echoSNI = "outbound_.9000_._.echo.shop.svc.clusterset.local"

// backend is a TLS echo server: it answers each line with its name and the line.
type backend struct {
	addr string
	cert *x509.Certificate
}

// selfSigned is a throwaway TLS certificate for test backends.
func selfSigned(t testing.TB) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, cert
}

// startBackend is a TLS server that answers each line with "<name>:<line>", and a line
// "bulk N" with N bytes and the end of the connection.
func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	pair, cert := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := make([]byte, 256<<10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if n, ok := strings.CutPrefix(strings.TrimSpace(line), "bulk "); ok {
						// A bulk transfer for the benchmark: N bytes, then the end.
						left, _ := strconv.Atoi(n)
						for left > 0 {
							w, err := c.Write(chunk[:min(left, len(chunk))])
							if err != nil {
								return
							}
							left -= w
						}
						return
					}
					fmt.Fprintf(c, "%s:%s", name, line)
				}
			}()
		}
	}()
	return &backend{addr: ln.Addr().String(), cert: cert}
}

// controlPlane serves the gateway's resources over ADS (go-control-plane, as meshfed's
// member does).
type controlPlane struct {
	cache   cachev3.SnapshotCache
	addr    string
	server  *grpc.Server
	version int
	// pki is its mTLS: clients use pki.files, as the gateway's binary does.
	pki *testPKI
}

func startControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil), pki: newTestPKI(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cp.server = grpc.NewServer(grpc.Creds(credentials.NewTLS(cp.pki.serverTLS())))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.server, serverv3.NewServer(context.Background(), cp.cache, nil))
	go func() { _ = cp.server.Serve(ln) }()
	t.Cleanup(cp.server.Stop)
	return cp
}

func sockAddr(hostPort string) *corev3.Address {
	host, port, _ := net.SplitHostPort(hostPort)
	p, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
}

// set serves a gateway listener routing sni to backends; a chain without server names is
// something the gateway must refuse.
func (cp *controlPlane) set(t testing.TB, withNames bool, backends ...string) {
	t.Helper()
	tcp, _ := anypb.New(&tcpproxyv3.TcpProxy{StatPrefix: echoSNI, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: echoSNI}})
	chain := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}}}
	if withNames {
		chain.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{echoSNI}}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: echoSNI, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	for _, b := range backends {
		cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(b)}}})
	}
	cp.version++
	snap, err := cachev3.NewSnapshot(strconv.Itoa(cp.version), map[resource.Type][]types.Resource{
		resource.ListenerType: {&listenerv3.Listener{Name: "eastwest", Address: sockAddr("0.0.0.0:15443"), FilterChains: []*listenerv3.FilterChain{chain}}},
		resource.ClusterType: {&clusterv3.Cluster{Name: echoSNI, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}},
		resource.EndpointType: {cla},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "gw", snap); err != nil {
		t.Fatal(err)
	}
}

func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	testbed.Eventually(t, 10*time.Second, what, check)
}

// answered makes n calls through the gateway and tells which backends answered.
func answered(gw string, n int, backends ...*backend) (map[string]bool, error) {
	seen := map[string]bool{}
	for range n {
		name, err := call(gw, echoSNI, backends...)
		if err != nil {
			return nil, err
		}
		seen[name] = true
	}
	return seen, nil
}

// call makes a TLS connection through the gateway with serverName, checks that the TLS
// peer is one of the backends (TLS is not terminated on the way), and returns the name of
// the backend that answered.
func call(gw, serverName string, backends ...*backend) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", gw, &tls.Config{ServerName: serverName, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, b := range backends {
				if cs.PeerCertificates[0].Equal(b.cert) {
					return nil
				}
			}
			return errors.New("the peer is not a backend")
		}})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "hi\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	name, _, _ := bytes.Cut([]byte(line), []byte(":"))
	return string(name), nil
}

// sendAndEnd sends line through the gateway, then ends the client's side — the TLS stream
// (close_notify), then the TCP stream (FIN) — and returns all that comes back until the
// other side ends too.
func sendAndEnd(t *testing.T, gw, line string) string {
	t.Helper()
	raw, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	type result struct {
		got []byte
		err error
	}
	answer := make(chan result, 1)
	go func() {
		got, err := io.ReadAll(conn)
		answer <- result{got, err}
	}()
	if _, err := io.WriteString(conn, line); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := raw.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-answer
	if r.err != nil {
		t.Errorf("after %d bytes back: %v", len(r.got), r.err)
	}
	return string(r.got)
}

func TestGateway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	cp := startControlPlane(t)
	cp.set(t, true, a.addr)

	reg := prometheus.NewRegistry()
	g := New(logr.Discard(), reg)
	g.HelloTimeout = 300 * time.Millisecond
	client := &Client{Address: cp.addr, Node: GatewayNode("gw", "cluster-1"), OnTable: g.SetTable, OnReject: g.Rejected, Log: logr.Discard(),
		TLS: cp.pki.files.TLSConfig(cp.addr)}
	go func() { _ = client.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln, time.Second) }()
	gw := ln.Addr().String()
	eventually(t, "the gateway routes to a", func() error {
		name, err := call(gw, echoSNI, a)
		if err == nil && name != "a" {
			err = fmt.Errorf("answered by %q", name)
		}
		return err
	})

	refusals := func(reason string) float64 { return testutil.ToFloat64(g.metrics.refusals.WithLabelValues(reason)) }
	t.Run("an unknown server name is refused", func(t *testing.T) {
		if _, err := call(gw, "outbound_.9000_._.billing.shop.svc.clusterset.local", a); err == nil {
			t.Fatal("routed")
		}
		if refusals(ReasonUnknownSNI) != 1 {
			t.Errorf("unknown_sni refusals %v", refusals(ReasonUnknownSNI))
		}
	})
	t.Run("plain TCP and HTTP are refused", func(t *testing.T) {
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _ := c.Read(make([]byte, 10)); n != 0 {
			t.Error("the gateway answered plain HTTP")
		}
		c.Close()
		eventually(t, "not_tls counted", func() error {
			if refusals(ReasonNotTLS) != 1 {
				return fmt.Errorf("%v", refusals(ReasonNotTLS))
			}
			return nil
		})
	})
	t.Run("a client that sends nothing is timed out", func(t *testing.T) { expectHelloTimeout(t, g, gw) })
	t.Run("new endpoints take effect", func(t *testing.T) {
		cp.set(t, true, a.addr, b.addr)
		eventually(t, "both backends used", func() error {
			seen, err := answered(gw, 4, a, b)
			if err == nil && (!seen["a"] || !seen["b"]) {
				err = fmt.Errorf("seen %v", seen)
			}
			return err
		})
	})
	t.Run("a configuration it cannot serve is refused and the last good one stays", func(t *testing.T) {
		cp.set(t, false, a.addr, b.addr)
		eventually(t, "the listener refused", func() error {
			if v := testutil.ToFloat64(g.metrics.rejected); v < 1 {
				return fmt.Errorf("rejected %v", v)
			}
			return nil
		})
		eventually(t, "the gateway still routes with the last good listener", func() error {
			seen, err := answered(gw, 4, a, b)
			if err == nil && !seen["a"] {
				err = fmt.Errorf("seen %v", seen)
			}
			return err
		})
	})
	// go-control-plane sends a refused version again at once; the client slows that loop
	// to one refusal a second.
	if v := testutil.ToFloat64(g.metrics.rejected); v > 20 {
		t.Errorf("%v refusals of one listener: the client loops with the control plane", v)
	}
	spliced := func() float64 { return testutil.ToFloat64(g.metrics.spliced) }
	t.Run("a transfer larger than the buffers arrives whole, both ways, spliced", func(t *testing.T) {
		before := spliced()
		conn, err := tls.Dial("tcp", gw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		line := strings.Repeat("0123456789abcdef", 256<<10) + "\n" // 4 MiB
		go func() { _, _ = io.WriteString(conn, line) }()
		got, err := bufio.NewReaderSize(conn, 64<<10).ReadString('\n')
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, rest, _ := strings.Cut(got, ":"); rest != line {
			t.Errorf("got %d bytes back, want the %d sent", len(rest), len(line))
		}
		// Much of the 8 MiB went from socket to socket without a copy (counted once the
		// pair ends). How much depends on how the bytes arrive: a splice follows only
		// reads that filled the whole buffer.
		eventually(t, "some of it spliced", func() error {
			if moved := spliced() - before; moved < 1<<20 {
				return fmt.Errorf("%v bytes spliced", moved)
			}
			return nil
		})
		t.Logf("%.0f of %d bytes spliced", spliced()-before, 2*len(line))
	})
	t.Run("a download faster than the client reads arrives whole", func(t *testing.T) {
		// The client's small receive buffer fills, so the gateway holds bytes for it and
		// must learn when it takes more.
		const size = 16 << 20
		dialer := &net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		conn, err := tls.DialWithDialer(dialer, "tcp", gw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "bulk %d\n", size)
		if n, err := io.Copy(io.Discard, conn); n != size {
			t.Errorf("got %d of %d bytes (%v)", n, size, err)
		}
	})
	t.Run("a client that is done sending still gets its answer (half-close)", func(t *testing.T) {
		line := "last words\n"
		if _, got, _ := strings.Cut(sendAndEnd(t, gw, line), ":"); got != line {
			t.Errorf("got %q back, want %q", got, line)
		}
	})
	t.Run("a client that is done sending a bulk upload still gets its whole answer", func(t *testing.T) {
		line := strings.Repeat("fedcba9876543210", 128<<10) + "\n" // 2 MiB: large enough to be spliced both ways
		if _, got, _ := strings.Cut(sendAndEnd(t, gw, line), ":"); got != line {
			t.Errorf("got %d bytes back, want the %d sent", len(got), len(line))
		}
	})
	t.Run("a client that sends its ClientHello and hangs up at once is let go", func(t *testing.T) {
		// The ClientHello and the FIN arrive together: the backend gets both, gives up on
		// the handshake, and the gateway closes the pair instead of keeping it open.
		hello := helloFor(t, echoSNI)
		for range 5 {
			c, err := net.Dial("tcp", gw)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write(hello)
			_ = c.(*net.TCPConn).CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = io.Copy(io.Discard, c)
			c.Close()
			if err != nil {
				t.Fatalf("the gateway kept the connection: %v", err)
			}
		}
		eventually(t, "no connection left open", func() error {
			if v := testutil.ToFloat64(g.metrics.active); v != 0 {
				return fmt.Errorf("%v active connections", v)
			}
			return nil
		})
	})
	t.Run("many clients at once, among clients that leave mid-ClientHello: every call is answered", func(t *testing.T) {
		// Connections open and close all the time, so descriptor numbers are reused
		// while events of their former connections may still be pending.
		var wg sync.WaitGroup
		failed := make(chan error, 400)
		for i := range 24 {
			wg.Go(func() {
				for range 20 {
					if i%3 == 2 {
						if c, err := net.Dial("tcp", gw); err == nil {
							_, _ = c.Write([]byte{22, 3, 1})
							c.Close()
						}
						continue
					}
					if _, err := call(gw, echoSNI, a, b); err != nil {
						failed <- err
					}
				}
			})
		}
		wg.Wait()
		close(failed)
		for err := range failed {
			t.Error(err)
		}
	})
	t.Run("the control plane goes away: routing goes on", func(t *testing.T) {
		cp.server.Stop()
		for range 4 {
			if _, err := call(gw, echoSNI, a, b); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("shutdown drains", func(t *testing.T) {
		conn, err := tls.Dial("tcp", gw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cancel()
		// The open connection keeps working during the drain.
		fmt.Fprintf(conn, "still there\n")
		if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
			t.Errorf("an open connection broke at shutdown: %v", err)
		}
		conn.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
}

// TestBusyLoopsLetTheRestRun: a loop with traffic keeps its processor while it waits for
// events; with one processor and a connection busy all along, the gateway's xDS client
// still applies a new configuration and the busy connection keeps being served.
func TestBusyLoopsLetTheRestRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	cp := startControlPlane(t)
	cp.set(t, true, a.addr)
	_, gw := startGateway(ctx, t, cp)
	eventually(t, "the gateway routes to a", func() error {
		_, err := call(gw, echoSNI, a)
		return err
	})

	busy, err := tls.Dial("tcp", gw, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var trips atomic.Int64
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReader(busy)
		for ctx.Err() == nil {
			fmt.Fprintf(busy, "hi\n")
			if _, err := r.ReadString('\n'); err != nil {
				if ctx.Err() != nil {
					err = nil // the gateway is draining
				}
				done <- err
				return
			}
			trips.Add(1)
		}
		done <- nil
	}()
	eventually(t, "the busy connection is served", func() error {
		if n := trips.Load(); n < 100 {
			return fmt.Errorf("%d round trips", n)
		}
		return nil
	})
	cp.set(t, true, b.addr)
	eventually(t, "the new configuration routes to b", func() error {
		name, err := call(gw, echoSNI, a, b)
		if err == nil && name != "b" {
			err = fmt.Errorf("answered by %q", name)
		}
		return err
	})
	before := trips.Load()
	eventually(t, "the busy connection is still served", func() error {
		if n := trips.Load(); n < before+100 {
			return fmt.Errorf("%d round trips since the change", n-before)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the busy connection: %v", err)
	}
}

// startGateway serves a gateway fed by cp until ctx ends; it returns the gateway and the
// address it listens on.
func startGateway(ctx context.Context, t *testing.T, cp *controlPlane) (*Gateway, string) {
	t.Helper()
	g := New(logr.Discard(), prometheus.NewRegistry())
	client := &Client{Address: cp.addr, Node: GatewayNode("gw", "cluster-1"), OnTable: g.SetTable, OnReject: g.Rejected, Log: logr.Discard(),
		TLS: cp.pki.files.TLSConfig(cp.addr)}
	go func() { _ = client.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ctx, ln, time.Second) }()
	return g, ln.Addr().String()
}

// rawBackend is a TCP listener that hands over the connections it accepts; control sets
// options on the listening socket, which the accepted ones inherit.
func rawBackend(t *testing.T, control func(fd int)) (string, <-chan *net.TCPConn) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { control(int(fd)) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *net.TCPConn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.(*net.TCPConn)
		}
	}()
	return ln.Addr().String(), accepted
}

// dialRouted opens a connection through the gateway whose ClientHello reached the
// backend, once the gateway routes.
func dialRouted(t *testing.T, gw string, accepted <-chan *net.TCPConn) (client, backend *net.TCPConn) {
	t.Helper()
	eventually(t, "a connection routed to the backend", func() error {
		conn, err := net.Dial("tcp", gw)
		if err != nil {
			return err
		}
		_, _ = conn.Write(helloFor(t, echoSNI))
		select {
		case backend = <-accepted:
			client = conn.(*net.TCPConn)
			return nil
		case <-time.After(time.Second):
			conn.Close()
			return errors.New("not routed")
		}
	})
	t.Cleanup(func() { client.Close(); backend.Close() })
	return client, backend
}

// A client that ends its side and then resets the connection takes nothing more, so its
// pair ends at once, also when the backend has nothing to say (nothing would otherwise
// show that the client is gone).
func TestAResetClientEndsItsPair(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A backend that never answers: the TCP connection is all it gives.
	addr, accepted := rawBackend(t, func(int) {})
	cp := startControlPlane(t)
	cp.set(t, true, addr)
	g, gw := startGateway(ctx, t, cp)
	c, backend := dialRouted(t, gw, accepted)

	// The client ends its side; the backend gets the ClientHello and the end.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, backend); err != nil {
		t.Fatalf("the backend did not get the client's end: %v", err)
	}
	// Then it resets the connection.
	_ = c.SetLinger(0)
	c.Close()
	eventually(t, "the pair ended", func() error {
		if v := testutil.ToFloat64(g.metrics.active); v != 0 {
			return fmt.Errorf("%v active connections", v)
		}
		return nil
	})
	// The gateway closed its connection to the backend: writing to it fails.
	eventually(t, "the backend connection closed", func() error {
		if _, err := backend.Write([]byte("late\n")); err == nil {
			return errors.New("still open")
		}
		return nil
	})
}

// What a client sent before it reset the connection still reaches a backend that reads
// slower than the client sent.
func TestBytesSentBeforeAResetArrive(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one loop: its events are handled in order
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Small segments and a small receive buffer keep the gateway's send buffer towards the
	// backend small, so that the gateway holds bytes for it.
	addr, accepted := rawBackend(t, func(fd int) {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, 536)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	})
	cp := startControlPlane(t)
	cp.set(t, true, addr)
	_, gw := startGateway(ctx, t, cp)
	c, backend := dialRouted(t, gw, accepted)

	const size = 160 << 10
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	// Once the gateway's kernel has taken all of it, the client resets the connection.
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client's bytes taken by the gateway", func() error {
		var queued int
		var qerr error
		if err := raw.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), unix.TIOCOUTQ) }); err != nil {
			return err
		}
		if qerr == nil && queued > 0 {
			qerr = fmt.Errorf("%d bytes not taken", queued)
		}
		return qerr
	})
	_ = c.SetLinger(0)
	c.Close()
	// A connection routed after the reset shows that the loop has seen the reset.
	dialRouted(t, gw, accepted)

	_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.Copy(io.Discard, backend)
	if want := int64(len(helloFor(t, echoSNI)) + size); got != want {
		t.Errorf("the backend got %d of the %d bytes sent (%v)", got, want, err)
	}
}

// expectHelloTimeout: a client that connects to gw and sends nothing is let go about the
// gateway's hello timeout later, and counted.
func expectHelloTimeout(t *testing.T, g *Gateway, gw string) {
	t.Helper()
	before := testutil.ToFloat64(g.metrics.refusals.WithLabelValues(ReasonTimeout))
	c, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the gateway sent something")
	}
	if waited := time.Since(start); waited > g.HelloTimeout+2*time.Second {
		t.Errorf("closed after %s, want about the %s hello timeout", waited, g.HelloTimeout)
	}
	eventually(t, "hello_timeout counted", func() error {
		if got := testutil.ToFloat64(g.metrics.refusals.WithLabelValues(ReasonTimeout)); got != before+1 {
			return fmt.Errorf("%v", got-before)
		}
		return nil
	})
}

// TestAMemberThatExportsNothingHasAReadyGateway: a listener without chains and no
// cluster is a member with nothing exported yet; the gateway is ready (its Deployment
// becomes available) and refuses every name.
func TestAMemberThatExportsNothingHasAReadyGateway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := startControlPlane(t)
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: {&listenerv3.Listener{Name: "eastwest", Address: sockAddr("0.0.0.0:15443")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(ctx, "gw", snap); err != nil {
		t.Fatal(err)
	}
	g, addr := startGateway(ctx, t, cp)
	eventually(t, "the gateway is ready", func() error {
		if !g.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	if _, err := call(addr, echoSNI); err == nil {
		t.Error("a gateway with an empty table routed a connection")
	}
}
