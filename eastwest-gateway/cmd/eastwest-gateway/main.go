// Command eastwest-gateway is meshfed's east-west gateway: it follows its member's xDS
// server and routes TLS connections on --listen by server name to the local endpoints of
// exported services, without terminating TLS. It serves /healthz, /readyz (ready once it
// has a configuration) and /metrics on --admin, and drains on SIGTERM.
package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/stdr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/eastwest-gateway/gateway"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		xdsAddress, nodeID, cluster, listen, admin string
		xdsCertDir, xdsBundle                      string
		drain, helloTimeout, idleTimeout           time.Duration
		verbosity, maxConnections                  int
	)
	cmd := &cobra.Command{
		Use:          "eastwest-gateway --xds-address HOST:PORT --cluster NAME",
		Short:        "Route TLS connections between clusters by SNI, without terminating TLS",
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if xdsAddress == "" || cluster == "" || xdsCertDir == "" || xdsBundle == "" {
				return errors.New("--xds-address, --xds-cert-dir, --xds-trust-bundle and --cluster are required")
			}
			if nodeID == "" {
				host, _ := os.Hostname()
				nodeID = "eastwest-gateway~" + host
			}
			stdr.SetVerbosity(verbosity)
			logger := stdr.New(log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			gw := gateway.New(logger, reg)
			gw.HelloTimeout, gw.IdleTimeout, gw.MaxConnections = helloTimeout, idleTimeout, maxConnections
			client := &gateway.Client{Address: xdsAddress, Node: gateway.GatewayNode(nodeID, cluster), Log: logger.WithName("xds"),
				OnTable: func(t *gateway.Table) {
					gw.SetTable(t)
					logger.Info("configuration", "version", t.Version, "routes", len(t.Names()))
				},
				OnReject: gw.Rejected, TLS: gateway.XDSFiles{CertDir: xdsCertDir, BundleFile: xdsBundle}.TLSConfig(xdsAddress)}
			go func() { _ = client.Run(ctx) }()

			mux := http.NewServeMux()
			mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
			mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
				if !gw.Ready() {
					http.Error(w, "no configuration from "+xdsAddress+" yet", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprintln(w, "ok")
			})
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			adminServer := &http.Server{Addr: admin, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			go func() {
				if err := adminServer.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
					logger.Error(err, "admin server")
					stop()
				}
			}()
			defer adminServer.Close()

			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			logger.Info("east-west gateway", "listen", ln.Addr().String(), "xds", xdsAddress, "node", nodeID, "admin", admin)
			err = gw.Serve(ctx, ln, drain)
			logger.Info("stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&xdsAddress, "xds-address", "", "the member's xDS server (host:port; the host is the name its certificate has)")
	f.StringVar(&xdsCertDir, "xds-cert-dir", "", "directory with the gateway's xDS client certificate (tls.crt, tls.key)")
	f.StringVar(&xdsBundle, "xds-trust-bundle", "", "the federation's trust bundle (PEM), to check the xDS server")
	f.StringVar(&cluster, "cluster", "", "the member's cluster name")
	f.StringVar(&nodeID, "node-id", "", "xDS node ID (default eastwest-gateway~<hostname>)")
	f.StringVar(&listen, "listen", ":15443", "address for TLS connections from other clusters")
	f.StringVar(&admin, "admin", ":15021", "address of /healthz, /readyz and /metrics")
	f.DurationVar(&drain, "drain", 30*time.Second, "how long open connections may finish after SIGTERM")
	f.DurationVar(&helloTimeout, "hello-timeout", 5*time.Second, "how long a client has to send its whole ClientHello")
	f.IntVar(&maxConnections, "max-connections", gateway.DefaultMaxConnections,
		"connections held at once; beyond, new ones wait in the listen backlog (0: no cap)")
	f.DurationVar(&idleTimeout, "idle-timeout", gateway.DefaultIdleTimeout, "close a routed connection after this long without a byte either way (0: never)")
	f.IntVar(&verbosity, "v", 0, "log verbosity (1 logs every refused connection)")
	return cmd
}
