// Command workload is the testbed's default workload process: an HTTP server on POD_IP at
// every port in PORTS that answers with who it is, so tests can tell which pod, in which
// cluster, served a request.
//
// It also answers /env/<NAME> with an environment variable and /file/<path> with a file,
// so that tests can see a pod's environment and volumes from outside; flags make it crash
// (-exit-after, -exit-code) or drain after SIGTERM (-drain), for tests of the node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
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
