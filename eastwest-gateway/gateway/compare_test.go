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
	"testing"
	"time"
)

// benchBackend is a TLS server: a first line "bulk N" gets N bytes back and the
// connection closes; any other line is echoed, line after line.
func benchBackend(b *testing.B) string {
	b.Helper()
	pair, _ := selfSigned(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
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
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// startProcess runs a proxy and waits until addr accepts connections.
func startProcess(b *testing.B, addr string, name string, args ...string) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startNginx(b *testing.B, backend string) string {
	b.Helper()
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
  server { listen %s reuseport; ssl_preread on; proxy_pass $backend; }
}
`, module, dir, dir, echoSNI, backend, addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	startProcess(b, addr, "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	return addr
}

func startHAProxy(b *testing.B, backend string) string {
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
	startProcess(b, addr, "haproxy", "-f", path, "-db")
	return addr
}

func startMeshfed(b *testing.B, backend string) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "eastwest-gateway")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/eastwest-gateway").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	cp := startControlPlane(b)
	cp.set(b, true, backend)
	ports := freePorts(b, 2)
	addr := "127.0.0.1:" + ports[0]
	startProcess(b, addr, bin, "--xds-address", cp.addr, "--cluster", "c", "--node-id", "gw", "--listen", addr, "--admin", "127.0.0.1:"+ports[1])
	// Listening comes before the configuration: wait until a connection is routed.
	eventually(b, "the gateway routes", func() error {
		_, err := dialTLS(addr)
		return err
	})
	return addr
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

// BenchmarkCompareProxies runs the same loads, on loopback in one run, straight to a TLS
// backend and through meshfed's gateway, nginx (stream + ssl_preread) and HAProxy (TCP
// mode, req.ssl_sni), each routing by SNI without terminating TLS: throughput of a large
// transfer (MB/s), new TLS connections (ns/op is the time of one), and the latency of a
// request on an open connection (p50/p99). Needs the nginx and haproxy commands (Debian
// packages nginx-light, libnginx-mod-stream, haproxy).
func BenchmarkCompareProxies(b *testing.B) {
	for _, cmd := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(cmd); err != nil {
			b.Skipf("%s is not installed (Debian packages nginx-light, libnginx-mod-stream and haproxy)", cmd)
		}
	}
	backend := benchBackend(b)
	proxies := []struct{ name, addr string }{
		{"direct", backend},
		{"meshfed", startMeshfed(b, backend)},
		{"nginx", startNginx(b, backend)},
		{"haproxy", startHAProxy(b, backend)},
	}
	const bulk = 64 << 20
	for _, p := range proxies {
		b.Run("throughput/"+p.name, func(b *testing.B) {
			b.SetBytes(bulk)
			for b.Loop() {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr, &tls.Config{ServerName: echoSNI, InsecureSkipVerify: true})
				if err != nil {
					b.Fatal(err)
				}
				fmt.Fprintf(c, "bulk %d\n", bulk)
				n, err := io.Copy(io.Discard, c)
				c.Close()
				if n != bulk {
					b.Fatalf("got %d bytes (%v)", n, err)
				}
			}
		})
	}
	for _, p := range proxies {
		b.Run("new-connections/"+p.name, func(b *testing.B) {
			for b.Loop() {
				c, err := dialTLS(p.addr)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
	for _, p := range proxies {
		b.Run("latency/"+p.name, func(b *testing.B) {
			c, err := dialTLS(p.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			var ds []time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(start))
			}
			slices.Sort(ds)
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "µs-p50")
			b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "µs-p99")
		})
	}
}
