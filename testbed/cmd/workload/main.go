// Command workload is the testbed's default workload process: an HTTP server on POD_IP at
// every port in PORTS that answers with who it is, so tests can tell which pod, in which
// cluster, served a request.
//
// It also answers /env/<NAME> with an environment variable and /file/<path> with a file,
// so that tests can see a pod's environment and volumes from outside; flags make it crash
// (-exit-after, -exit-code) or drain after SIGTERM (-drain), for tests of the node. Every
// port also serves the pod controls of package podctl (/readyz, /ready, /kill).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/testbed/cmd/internal/podctl"
)

func main() {
	exitAfter := flag.Duration("exit-after", 0, "exit this long after starting (0: never)")
	exitCode := flag.Int("exit-code", 1, "exit code of -exit-after")
	drain := flag.Duration("drain", 0, "after SIGTERM, answer \"terminating\" this long before exiting")
	flag.Parse()
	ip, ports := os.Getenv("POD_IP"), os.Getenv("PORTS")
	if ip == "" || ports == "" {
		log.Fatal("workload: POD_IP and PORTS must be set (the testbed sets them)")
	}
	identity := fmt.Sprintf("pod=%s namespace=%s cluster=%s", os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"), os.Getenv("CLUSTER_NAME"))
	terminating := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-terminating:
			fmt.Fprintln(w, "terminating "+identity)
		default:
			fmt.Fprintln(w, identity)
		}
	})
	mux.HandleFunc("/env/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.PathValue("name"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("/file/", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "/"+strings.TrimPrefix(r.URL.Path, "/file/"))
	})
	// /get?url=U fetches U from inside the pod, as the pod's service account when token is
	// set, trusting the cluster CA of the service-account volume for https.
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		body, err := fetch(r.Context(), r.URL.Query().Get("url"), r.URL.Query().Get("token") != "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(body) //nolint:errcheck
	})
	// /resolve/<name> resolves name with the pod's resolv.conf.
	mux.HandleFunc("/resolve/{name}", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := net.DefaultResolver.LookupHost(r.Context(), r.PathValue("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprint(w, strings.Join(addrs, ","))
	})
	podctl.Handle(mux, func() bool { return true })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var servers []*http.Server
	errs := make(chan error, 8)
	for _, port := range strings.Split(ports, ",") {
		srv := &http.Server{Addr: net.JoinHostPort(ip, port), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() { errs <- srv.ListenAndServe() }()
	}
	log.Printf("workload: %s serving on %s ports %s", identity, ip, ports)
	var exit <-chan time.Time
	if *exitAfter > 0 {
		exit = time.After(*exitAfter)
	}
	select {
	case <-ctx.Done():
		log.Printf("workload: SIGTERM received, draining for %s", *drain)
		close(terminating)
		time.Sleep(*drain)
	case <-exit:
		log.Printf("workload: exiting with code %d as asked", *exitCode)
		os.Exit(*exitCode)
	case err := <-errs:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("workload: %v", err)
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdown)
	}
}

// serviceAccountDir is where a pod's service-account token and cluster CA are.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// fetch GETs url and returns the body of a 2xx answer.
func fetch(ctx context.Context, url string, withToken bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if withToken {
		token, err := os.ReadFile(serviceAccountDir + "/token")
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+string(token))
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if ca, err := os.ReadFile(serviceAccountDir + "/ca.crt"); err == nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}
