package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/meshfed/meshfed/testbed"
)

// helloBytes is a real ClientHello for echoSNI, taken from a Go TLS client.
func helloBytes(t *testing.T) []byte { return helloFor(t, echoSNI) }

// helloFor is a real ClientHello for serverName.
func helloFor(t *testing.T, serverName string) []byte {
	t.Helper()
	srv, cli := net.Pipe()
	go func() {
		c := tls.Client(cli, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_ = c.Handshake()
	}()
	buf := make([]byte, 4096)
	_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := io.ReadAtLeast(srv, buf, 5)
	want := 5 + (int(buf[3])<<8 | int(buf[4]))
	for n < want {
		m, err := srv.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	srv.Close()
	return buf[:want]
}

// TestBadInputIsRefusedWithAReason: truncated and oversized ClientHellos, and names that
// cannot be served, are refused and counted by reason, and good traffic goes on.
func TestBadInputIsRefusedWithAReason(t *testing.T) {
	for path, serve := range dataPaths {
		t.Run(path, func(t *testing.T) { testBadInput(t, serve) })
	}
}

// dataPaths are the gateway's two ways of serving: the event loops Serve runs on Linux,
// and the portable one it runs elsewhere.
var dataPaths = map[string]func(*Gateway, context.Context, net.Listener, time.Duration) error{
	"event loops": (*Gateway).Serve,
	"portable":    (*Gateway).servePortable,
}

func testBadInput(t *testing.T, serve func(*Gateway, context.Context, net.Listener, time.Duration) error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := startBackend(t, "a")
	g := New(logr.Discard(), prometheus.NewRegistry())
	g.HelloTimeout = 500 * time.Millisecond
	down := freePorts(t, 1)[0] // nothing listens there
	g.SetTable(&Table{routes: map[string]*route{
		echoSNI:         {cluster: echoSNI, backends: []string{a.addr}},
		"down.example":  {cluster: "down", backends: []string{"127.0.0.1:" + down}},
		"empty.example": {cluster: "empty"},
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(g, ctx, ln, time.Second) }()
	hello := helloBytes(t)
	oversized := append([]byte{}, hello...)
	oversized[6], oversized[7], oversized[8] = 0x01, 0x00, 0x00
	cases := []struct {
		name   string
		send   []byte
		reason string
	}{
		{"a ClientHello cut short", hello[:len(hello)/2], ReasonTruncated},
		{"a ClientHello larger than allowed", oversized, ReasonTooLarge},
		{"random bytes", []byte("\x16\x03\x01\x00\x05hello"), ReasonNotClientHello},
		{"an SSH banner", []byte("SSH-2.0-OpenSSH_9.2\r\n"), ReasonNotTLS},
		{"a name whose backend refuses connections", helloFor(t, "down.example"), ReasonDialFailed},
		{"a name without ready endpoints", helloFor(t, "empty.example"), ReasonNoEndpoints},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(g.metrics.refusals.WithLabelValues(tc.reason))
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write(tc.send)
			if tcp, ok := c.(*net.TCPConn); ok {
				_ = tcp.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, _ := c.Read(make([]byte, 1)); n != 0 {
				t.Error("the gateway answered")
			}
			c.Close()
			eventually(t, tc.reason+" counted", func() error {
				if testutil.ToFloat64(g.metrics.refusals.WithLabelValues(tc.reason)) != before+1 {
					return fmt.Errorf("not yet")
				}
				return nil
			})
			if name, err := call(ln.Addr().String(), echoSNI, a); err != nil || name != "a" {
				t.Errorf("good traffic after bad input: %q %v", name, err)
			}
		})
	}
	t.Run("a client that sends nothing is timed out", func(t *testing.T) { expectHelloTimeout(t, g, ln.Addr().String()) })
	t.Run("a client that is done sending still gets its answer (half-close)", func(t *testing.T) {
		line := "last words\n"
		if _, got, _ := strings.Cut(sendAndEnd(t, ln.Addr().String(), line), ":"); got != line {
			t.Errorf("got %q back, want %q", got, line)
		}
	})
	t.Run("a bulk upload comes back whole", func(t *testing.T) {
		line := strings.Repeat("fedcba9876543210", 128<<10) + "\n"
		if _, got, _ := strings.Cut(sendAndEnd(t, ln.Addr().String(), line), ":"); got != line {
			t.Errorf("got %d bytes back, want the %d sent", len(got), len(line))
		}
	})
}

// TestTenThousandIdleConnections: the gateway binary holds 10,000 connections that send
// nothing, keeps serving good traffic meanwhile, and times every one of them out.
func TestTenThousandIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	const idle = 10000
	a := startBackend(t, "a")
	listen, admin, _ := gatewayProcess(t, a, "--hello-timeout", "3s")
	start := time.Now()
	conns := openConns(t, listen, idle, nil)
	t.Logf("%d idle connections open in %s", len(conns), time.Since(start).Round(time.Millisecond))
	if name, err := call(listen, echoSNI, a); err != nil || name != "a" {
		t.Fatalf("good traffic beside %d idle connections: %q %v", len(conns), name, err)
	}
	testbed.Eventually(t, 30*time.Second, "every idle connection timed out and counted", func() error {
		got := testbed.Metric(context.Background(), "http://"+admin+"/metrics", `meshfed_gateway_refusals_total{reason="hello_timeout"} `)
		if got != strconv.Itoa(idle) {
			return fmt.Errorf("%q hello timeouts, want %d", got, idle)
		}
		return nil
	})
	if name, err := call(listen, echoSNI, a); err != nil || name != "a" {
		t.Errorf("good traffic afterwards: %q %v", name, err)
	}
}

// gatewayProcess builds the gateway binary and runs it, fed by a control plane that
// routes echoSNI to a, with args added; it returns the listen and admin addresses once the
// gateway is ready, and its process.
func gatewayProcess(t testing.TB, a *backend, args ...string) (listen, admin string, proc *os.Process) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "eastwest-gateway")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/eastwest-gateway").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cp := startControlPlane(t)
	cp.set(t, true, a.addr)
	ports := freePorts(t, 2)
	listen, admin = "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
	cmd := exec.Command(bin, append([]string{"--xds-address", cp.addr, "--xds-cert-dir", cp.pki.files.CertDir, "--xds-trust-bundle", cp.pki.files.BundleFile,
		"--cluster", "c", "--node-id", "gw", "--listen", listen, "--admin", admin, "--drain", "1s"}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually(t, "the gateway ready", func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
	return listen, admin, cmd.Process
}

// openConns opens n connections to addr from 20 workers, each sending first (if not
// nil), and closes them when the test ends.
func openConns(t testing.TB, addr string, n int, first []byte) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for range n / 20 {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil && first != nil {
					_, err = c.Write(first)
				}
				if err != nil {
					t.Errorf("connection from worker %d: %v", w, err)
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return conns
}

// BenchmarkHalfOpenClientHellos records the gateway binary's resident memory while it
// holds 20,000 connections that each sent 8 KB of a 16 KB ClientHello and stopped: what
// a flood from another network costs it (docs/performance.md, "Bounds"). The gateway and
// the benchmark each need a descriptor per connection: where the hard limit is lower (and
// cannot be raised), it opens as many as the limit leaves room for, and says so.
func BenchmarkHalfOpenClientHellos(b *testing.B) {
	conns := 20000
	var limit unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &limit); err != nil {
		b.Fatal(err)
	}
	if want := uint64(conns + 1000); limit.Max < want {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}); err == nil {
			limit.Max = want
		} else {
			conns = int(limit.Max) - 1000
			b.Logf("the descriptor limit is %d and cannot be raised (%v): %d connections", limit.Max, err, conns)
		}
	}
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit.Max, Max: limit.Max})
	// A record announcing a 16,000-byte ClientHello, and half of it.
	partial := append([]byte{0x16, 0x03, 0x01, 0x3e, 0x80, 0x01, 0x00, 0x3e, 0x7c, 0x03, 0x03}, make([]byte, 8000)...)
	for range b.N {
		a := startBackend(b, "a")
		listen, admin, proc := gatewayProcess(b, a, "--hello-timeout", "10m", "--max-connections", strconv.Itoa(conns+100))
		before := residentBytes(b, proc.Pid)
		start := time.Now()
		openConns(b, listen, conns, partial)
		b.Logf("%d half-open connections in %s", conns, time.Since(start).Round(time.Millisecond))
		testbed.Eventually(b, time.Minute, "every connection accepted", func() error {
			got := testbed.Metric(context.Background(), "http://"+admin+"/metrics", "meshfed_gateway_active_connections ")
			if got != strconv.Itoa(conns) {
				return fmt.Errorf("%s active connections, want %d", got, conns)
			}
			return nil
		})
		if name, err := call(listen, echoSNI, a); err != nil || name != "a" {
			b.Fatalf("good traffic beside %d half-open connections: %q %v", conns, name, err)
		}
		after := residentBytes(b, proc.Pid)
		b.ReportMetric(float64(after)/(1<<20), "MiB-resident")
		b.ReportMetric(float64(conns), "conns")
		b.ReportMetric(float64(after-before)/float64(conns), "B/conn")
	}
}

// residentBytes is a process's resident set size.
func residentBytes(t testing.TB, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if kb, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		out = append(out, port)
		l.Close()
	}
	return out
}

// TestBeforeTheFirstConfiguration: until the control plane has sent a table, connections
// are refused as no_config; the first table routes them.
func TestBeforeTheFirstConfiguration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := startBackend(t, "a")
	g := New(logr.Discard(), prometheus.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ctx, ln, time.Second) }()
	if _, err := call(ln.Addr().String(), echoSNI, a); err == nil {
		t.Fatal("routed without a configuration")
	}
	eventually(t, "no_config counted", func() error {
		if v := testutil.ToFloat64(g.metrics.refusals.WithLabelValues(ReasonNoConfig)); v != 1 {
			return fmt.Errorf("no_config refusals %v", v)
		}
		return nil
	})
	g.SetTable(&Table{routes: map[string]*route{echoSNI: {cluster: echoSNI, backends: []string{a.addr}}}})
	if name, err := call(ln.Addr().String(), echoSNI, a); err != nil || name != "a" {
		t.Errorf("after the first table: %q %v", name, err)
	}
}
