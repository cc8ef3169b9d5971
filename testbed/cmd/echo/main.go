// Command echo is the testbed's proxyless gRPC workload.
//
//	echo server   serves grpc.testing.TestService as an xDS-enabled gRPC server on every
//	              port of $PORTS at $POD_IP: UnaryCall answers with the cluster and pod that
//	              served it and the caller's SPIFFE ID, after the milliseconds of the
//	              request's x-echo-delay-ms metadata. $CONTROL_PORT, when set, serves
//	              the testbed's pod controls (package podctl): ready once every port
//	              serves its xDS configuration; and POST /fail?v=true, after which every
//	              call fails with Unavailable (v=false ends it); and GET /metrics, the
//	              calls meshfed's authorization refused (package proxyless/refusals).
//	echo client   serves an HTTP API on $POD_IP:$PORTS that makes xDS gRPC calls:
//	              GET /call?target=xds:///host:port&n=100     n calls now, a summary back
//	                  (&header=name:value, repeated, sends request metadata)
//	              POST /load?target=...&interval=10ms          calls at a steady rate
//	                  (&header=name:value as for /call)
//	              GET /results                                 every call of the load so far
//	              and the pod controls (package podctl)
//
// Both read their xDS bootstrap from GRPC_XDS_BOOTSTRAP.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	_ "github.com/meshfed/meshfed/proxyless/refusals"
	"github.com/meshfed/meshfed/testbed/cmd/internal/podctl"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: echo server|client")
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serve()
	case "client":
		err = clientAPI()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

type echoServer struct {
	testgrpc.UnimplementedTestServiceServer
	failing *atomic.Bool
}

func (e echoServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-echo-delay-ms")) > 0 {
		ms, err := strconv.Atoi(md.Get("x-echo-delay-ms")[0])
		if err != nil || ms < 0 {
			return nil, status.Error(codes.InvalidArgument, "x-echo-delay-ms: a number of milliseconds")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(ms) * time.Millisecond):
		}
	}
	if e.failing.Load() {
		return nil, status.Error(codes.Unavailable, "failing on purpose (POST /fail)")
	}
	resp := &testgrpc.SimpleResponse{ServerId: os.Getenv("CLUSTER_NAME"), Hostname: os.Getenv("POD_NAME")}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && ti.SPIFFEID != nil {
			resp.Username = ti.SPIFFEID.String()
		}
	}
	return resp, nil
}

func serve() error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	ports := strings.Split(os.Getenv("PORTS"), ",")
	var mu sync.Mutex
	serving := map[string]bool{}
	echo := echoServer{failing: &atomic.Bool{}}
	for _, port := range ports {
		srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
			log.Printf("%s: serving mode %s %v", addr, args.Mode, args.Err)
			mu.Lock()
			serving[addr.String()] = args.Mode == connectivity.ServingModeServing
			mu.Unlock()
		}))
		if err != nil {
			return err
		}
		testgrpc.RegisterTestServiceServer(srv, echo)
		lis, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("POD_IP"), port))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- srv.Serve(lis)
		}()
	}
	if port := os.Getenv("CONTROL_PORT"); port != "" {
		mux := http.NewServeMux()
		podctl.Handle(mux, func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, ok := range serving {
				if ok {
					n++
				}
			}
			return n == len(ports)
		})
		// Calls refused by meshfed's authorization, counted by proxyless/refusals.
		mux.Handle("GET /metrics", promhttp.Handler())
		mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
			v, err := strconv.ParseBool(r.URL.Query().Get("v"))
			if err != nil {
				http.Error(w, "v must be true or false", http.StatusBadRequest)
				return
			}
			echo.failing.Store(v)
		})
		go func() { errs <- http.ListenAndServe(net.JoinHostPort(os.Getenv("POD_IP"), port), mux) }()
	}
	return <-errs
}

// call is one RPC as the client saw it.
type call struct {
	AtMillis float64 `json:"at"`
	// Millis is how long the call took.
	Millis  float64 `json:"millis"`
	OK      bool    `json:"ok"`
	Cluster string  `json:"cluster,omitempty"`
	Pod     string  `json:"pod,omitempty"`
	Peer    string  `json:"peer,omitempty"`
	Caller  string  `json:"caller,omitempty"`
	Error   string  `json:"error,omitempty"`
}

type client struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]testgrpc.TestServiceClient
	// the running load
	loadStop  context.CancelFunc
	loadStart time.Time
	calls     []call
}

func (c *client) conn(target string) (testgrpc.TestServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc, ok := c.conns[target]; ok {
		return tc, nil
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return nil, err
	}
	tc := testgrpc.NewTestServiceClient(cc)
	c.conns[target] = tc
	return tc, nil
}

func (c *client) one(ctx context.Context, tc testgrpc.TestServiceClient, timeout time.Duration) call {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var p peer.Peer
	start := time.Now()
	resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Peer(&p))
	took := float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return call{Error: err.Error(), Millis: took}
	}
	out := call{OK: true, Cluster: resp.ServerId, Pod: resp.Hostname, Caller: resp.Username, Millis: took}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && ti.SPIFFEID != nil {
		out.Peer = ti.SPIFFEID.String()
	}
	return out
}

// withHeaders adds the request's header=name:value parameters to ctx as gRPC metadata.
func withHeaders(ctx context.Context, r *http.Request) (context.Context, error) {
	for _, h := range r.URL.Query()["header"] {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("header %q: name:value", h)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, name, value)
	}
	return ctx, nil
}

func clientAPI() error {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	c := &client{creds: creds, conns: map[string]testgrpc.TestServiceClient{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /call", func(w http.ResponseWriter, r *http.Request) {
		tc, err := c.conn(r.URL.Query().Get("target"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		ctx, err := withHeaders(r.Context(), r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var calls []call
		for range max(n, 1) {
			calls = append(calls, c.one(ctx, tc, 5*time.Second))
		}
		_ = json.NewEncoder(w).Encode(calls)
	})
	mux.HandleFunc("GET /dial", func(w http.ResponseWriter, r *http.Request) {
		// A plain TCP connection from this pod, to show what the network lets through.
		conn, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), time.Second)
		out := map[string]any{"ok": err == nil}
		if err != nil {
			out["error"] = err.Error()
		} else {
			conn.Close()
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /load", func(w http.ResponseWriter, r *http.Request) {
		tc, err := c.conn(r.URL.Query().Get("target"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		interval, err := time.ParseDuration(r.URL.Query().Get("interval"))
		if err != nil || interval <= 0 {
			http.Error(w, "interval: a positive duration", http.StatusBadRequest)
			return
		}
		headers, err := withHeaders(context.Background(), r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithCancel(headers)
		c.mu.Lock()
		if c.loadStop != nil {
			c.loadStop()
		}
		c.loadStop, c.loadStart, c.calls = cancel, time.Now(), nil
		start := c.loadStart
		c.mu.Unlock()
		go func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				go func() {
					at := time.Since(start)
					res := c.one(ctx, tc, time.Second)
					if ctx.Err() != nil {
						return
					}
					res.AtMillis = float64(at.Microseconds()) / 1000
					c.mu.Lock()
					c.calls = append(c.calls, res)
					c.mu.Unlock()
				}()
			}
		}()
	})
	mux.HandleFunc("GET /results", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		calls := append([]call(nil), c.calls...)
		c.mu.Unlock()
		_ = json.NewEncoder(w).Encode(calls)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		if c.loadStop != nil {
			c.loadStop()
			c.loadStop = nil
		}
		c.mu.Unlock()
	})
	podctl.Handle(mux, func() bool { return true })
	addr := net.JoinHostPort(os.Getenv("POD_IP"), strings.Split(os.Getenv("PORTS"), ",")[0])
	return http.ListenAndServe(addr, mux)
}
