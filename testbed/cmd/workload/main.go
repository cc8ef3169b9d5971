// Command workload is the testbed's default workload process: an HTTP server on POD_IP at
// every port in PORTS that answers with who it is, so tests can tell which pod, in which
// cluster, served a request.
package main

import (
	"context"
	"errors"
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
	ip, ports := os.Getenv("POD_IP"), os.Getenv("PORTS")
	if ip == "" || ports == "" {
		log.Fatal("workload: POD_IP and PORTS must be set (the testbed sets them)")
	}
	identity := fmt.Sprintf("pod=%s namespace=%s cluster=%s", os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"), os.Getenv("CLUSTER_NAME"))
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, identity)
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var servers []*http.Server
	errs := make(chan error, 8)
	for _, port := range strings.Split(ports, ",") {
		srv := &http.Server{Addr: net.JoinHostPort(ip, port), Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() { errs <- srv.ListenAndServe() }()
	}
	select {
	case <-ctx.Done():
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
