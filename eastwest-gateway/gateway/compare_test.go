package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startProcess runs a proxy and waits until addr accepts connections; it returns the
// process group of the proxy's processes.
func startProcess(b *testing.B, addr string, name string, args ...string) int {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // nginx's workers go with it
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNginx runs nginx as a stream proxy. With halfClose it keeps a connection open after
// the client's end (proxy_half_close on), as meshfed's gateway, Envoy's tcp_proxy and
// HAProxy do; by default nginx closes both sides when the client ends, and drops what the
// server still had to send.
func startNginx(b *testing.B, backend string, halfClose bool) proxy {
	b.Helper()
	name, extra := "nginx", ""
	if halfClose {
		name, extra = "nginx-halfclose", "proxy_half_close on;"
	}
	dir := b.TempDir()
	addr := "127.0.0.1:" + freePorts(b, 1)[0]
	module := "/usr/lib/nginx/modules/ngx_stream_module.so"
	conf := fmt.Sprintf(`load_module %s;
worker_processes 2;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 8192; }
stream {
  map_hash_bucket_size 128;
  map $ssl_preread_server_name $backend { %s %s; default 127.0.0.1:9; }
  server { listen %s reuseport; ssl_preread on; proxy_pass $backend; %s }
}
`, module, dir, dir, echoSNI, backend, addr, extra)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	return proxy{name, addr, startProcess(b, addr, "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))}
}

func startHAProxy(b *testing.B, backend string) proxy {
	b.Helper()
	dir := b.TempDir()
	addr := "127.0.0.1:" + freePorts(b, 1)[0]
	conf := fmt.Sprintf(`global
  nbthread 2
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind %s
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend be if { req.ssl_sni -i %s }
backend be
  server s1 %s
`, addr, echoSNI, backend)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	return proxy{"haproxy", addr, startProcess(b, addr, "haproxy", "-f", path, "-db")}
}

func startMeshfed(b *testing.B, backend string) proxy {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "eastwest-gateway")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/eastwest-gateway").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	cp := startControlPlane(b)
	cp.set(b, true, backend)
	ports := freePorts(b, 2)
	addr := "127.0.0.1:" + ports[0]
	pgid := startProcess(b, addr, bin, "--xds-address", cp.addr, "--xds-cert-dir", cp.pki.files.CertDir, "--xds-trust-bundle", cp.pki.files.BundleFile, "--cluster", "c", "--node-id", "gw", "--listen", addr, "--admin", "127.0.0.1:"+ports[1])
	// Listening comes before the configuration: wait until a connection is routed.
	eventually(b, "the gateway routes", func() error {
		_, err := dialTLS(addr)
		return err
	})
	return proxy{"meshfed", addr, pgid}
}

func dialTLS(addr string) (*tls.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// BenchmarkCompareProxies measures, on loopback and in one run, the same TLS client and
// TLS backend straight and through meshfed's gateway, nginx (stream + ssl_preread) and
// HAProxy (TCP mode, req.ssl_sni), each routing by SNI without terminating TLS. Each
// iteration is a round in which every proxy, in turn, does the same work, so that a slow
// moment of the machine falls on all of them alike; a round's order rotates. Each figure
// is reported per proxy on one line: throughput of 64 MiB transfers (MB/s-<proxy>), one
// new TLS connection with one request (µs/conn-<proxy>), and the latency of a request on
// an open connection (µs-p50-<proxy>, µs-p99-<proxy>). nginx runs twice: as configured by
// default, and with half-close, which is what the others do (see startNginx). Needs the
// nginx and haproxy commands (Debian packages nginx-light, libnginx-mod-stream, haproxy).
func BenchmarkCompareProxies(b *testing.B) {
	for _, cmd := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(cmd); err != nil {
			b.Skipf("%s is not installed (Debian packages nginx-light, libnginx-mod-stream and haproxy)", cmd)
		}
	}
	backend := startBackend(b, "bench").addr
	proxies := []proxy{{name: "direct", addr: backend}, startMeshfed(b, backend), startNginx(b, backend, false), startHAProxy(b, backend), startNginx(b, backend, true)}
	const bulk = 64 << 20
	b.Run("throughput", func(b *testing.B) {
		took, cpu := rounds(b, proxies, func(b *testing.B, p proxy) []time.Duration {
			start := time.Now()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "bulk %d\n", bulk)
			if n, err := io.Copy(io.Discard, c); n != bulk {
				b.Fatalf("%s: got %d bytes (%v)", p.name, n, err)
			}
			return []time.Duration{time.Since(start)}
		})
		for _, p := range proxies {
			gb := float64(bulk*len(took[p.name])) / 1e9
			b.ReportMetric(gb*1e3/sum(took[p.name]).Seconds(), "MB/s-"+p.name)
			if p.pgid != 0 {
				b.ReportMetric(sum(cpu[p.name]).Seconds()*1e3/gb, "cpu-ms/GB-"+p.name)
			}
		}
	})
	b.Run("new-connections", func(b *testing.B) {
		// Clients open connections (TLS handshake and one request) as fast as they can,
		// concurrently: the rate is what the machine manages through each proxy.
		const clients, perClient = 8, 10
		took, cpu := rounds(b, proxies, func(b *testing.B, p proxy) []time.Duration {
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for range clients {
				wg.Go(func() {
					for range perClient {
						c, err := dialTLS(p.addr)
						if err != nil {
							errs <- err
							return
						}
						c.Close()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatalf("%s: %v", p.name, err)
			}
			return []time.Duration{time.Since(start)}
		})
		for _, p := range proxies {
			conns := float64(clients * perClient * len(took[p.name]))
			b.ReportMetric(conns/sum(took[p.name]).Seconds(), "conn/s-"+p.name)
			if p.pgid != 0 {
				b.ReportMetric(float64(sum(cpu[p.name]).Microseconds())/conns, "cpu-µs/conn-"+p.name)
			}
		}
	})
	b.Run("latency", func(b *testing.B) {
		conns := map[string]*bufio.ReadWriter{}
		for _, p := range proxies {
			c, err := dialTLS(p.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			conns[p.name] = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		}
		took, _ := rounds(b, proxies, func(b *testing.B, p proxy) []time.Duration {
			rw := conns[p.name]
			ds := make([]time.Duration, 50)
			for i := range ds {
				start := time.Now()
				if _, err := rw.WriteString("ping\n"); err != nil || rw.Flush() != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				if _, err := rw.ReadString('\n'); err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				ds[i] = time.Since(start)
			}
			return ds
		})
		for _, p := range proxies {
			ds := took[p.name]
			slices.Sort(ds)
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "µs-p50-"+p.name)
			b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "µs-p99-"+p.name)
		}
	})
}

// proxy is a proxy under test: its address, and its process group (0 for none).
type proxy struct {
	name, addr string
	pgid       int
}

// rounds runs one round per benchmark iteration: measure for every proxy, in an order
// that rotates from round to round; it returns what measure returned and the CPU time
// the proxy's processes used while it ran, by proxy.
func rounds(b *testing.B, proxies []proxy, measure func(*testing.B, proxy) []time.Duration) (took, cpu map[string][]time.Duration) {
	took, cpu = map[string][]time.Duration{}, map[string][]time.Duration{}
	round := 0
	for b.Loop() {
		for i := range proxies {
			p := proxies[(round+i)%len(proxies)]
			before := cpuTime(b, p.pgid)
			took[p.name] = append(took[p.name], measure(b, p)...)
			cpu[p.name] = append(cpu[p.name], cpuTime(b, p.pgid)-before)
		}
		round++
	}
	return took, cpu
}

// cpuTime is the user and system CPU time of the processes in a process group, from
// /proc (in clock ticks of 10 ms, so it is meaningful summed over many rounds).
func cpuTime(b *testing.B, pgid int) time.Duration {
	if pgid == 0 {
		return 0
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	var ticks int64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// After "pid (comm) ": state ppid pgrp ... utime is the 12th field, stime the 13th.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}
