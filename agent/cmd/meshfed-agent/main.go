// Command meshfed-agent is the sidecar the injection webhook adds to meshed pods (package
// agent). The pod's name, namespace and service account come from the downward API
// ($POD_NAME, $POD_NAMESPACE, $SERVICE_ACCOUNT); the rest are flags the webhook sets.
// "meshfed-agent capture" is the envoy template's init container: it redirects the pod's
// TCP traffic to the Envoy sidecar.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/agent"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "capture" {
		capture(os.Args[2:])
		return
	}
	o := agent.Options{
		PodName: os.Getenv("POD_NAME"), Namespace: os.Getenv("POD_NAMESPACE"), ServiceAccount: os.Getenv("SERVICE_ACCOUNT"),
	}
	flag.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	flag.StringVar(&o.Cluster, "cluster", "", "the member's cluster name (the Mesh's spec.clusterName)")
	flag.StringVar(&o.CAAddress, "ca-address", "meshfed-ca.meshfed-system.svc:15012", "the member's CA service, host:port")
	flag.StringVar(&o.XDSAddress, "xds-address", "meshfed-xds.meshfed-system.svc:15010", "the member's xDS server, host:port")
	flag.StringVar(&o.TokenFile, "token-file", "/var/run/secrets/meshfed/tokens/ca-token", "projected service-account token for the CA")
	flag.StringVar(&o.TrustDir, "trust-dir", "/var/run/meshfed/trust", "the mounted trust-bundle ConfigMap")
	flag.StringVar(&o.CredentialsDir, "credentials-dir", "/var/run/meshfed/credentials", "volume shared with the app")
	flag.StringVar(&o.ListenXDS, "listen-xds", agent.ListenXDS, "where the app's xDS client connects")
	flag.StringVar(&o.HealthAddr, "health-address", ":15021", "where /healthz, /ready and /metrics are served")
	flag.DurationVar(&o.Lifetime, "lifetime", 0, "certificate lifetime to ask for (0: the CA's default)")
	flag.DurationVar(&o.Refresh, "refresh", time.Second, "how often the app re-reads the certificate files")
	flag.StringVar(&o.Mode, "mode", agent.ModeGRPC, "the injection template: grpc-agent (a proxyless gRPC app) or envoy (an Envoy sidecar too)")
	flag.Parse()
	if o.PodName == "" || o.Namespace == "" || o.ServiceAccount == "" {
		fmt.Fprintln(os.Stderr, "meshfed-agent: POD_NAME, POD_NAMESPACE and SERVICE_ACCOUNT must be set (the injection webhook sets them from the downward API)")
		os.Exit(2)
	}
	o.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, o); err != nil {
		o.Log.Error("meshfed-agent stopped", "error", err)
		os.Exit(1)
	}
}

// capture is the envoy template's init container: it sends the pod's TCP traffic through
// the Envoy sidecar, then exits.
func capture(args []string) {
	fs := flag.NewFlagSet("capture", flag.ExitOnError)
	out := fs.Uint("outbound-port", 15001, "Envoy's port for the connections the pod opens")
	in := fs.Uint("inbound-port", 15006, "Envoy's port for the connections the pod accepts")
	var uids []uint32
	fs.Func("exclude-uid", "a user whose connections are not redirected: Envoy's, the agent's (repeatable)", func(s string) error {
		u, err := strconv.ParseUint(s, 10, 32)
		uids = append(uids, uint32(u))
		return err
	})
	var exclude []uint16
	fs.Func("exclude-inbound-port", "a port that reaches the pod without Envoy (repeatable)", func(s string) error {
		p, err := strconv.ParseUint(s, 10, 16)
		exclude = append(exclude, uint16(p))
		return err
	})
	_ = fs.Parse(args)
	if err := agent.Capture(agent.CaptureOptions{OutboundPort: uint16(*out), InboundPort: uint16(*in), ExcludeUIDs: uids, ExcludeInboundPorts: exclude}); err != nil {
		fmt.Fprintln(os.Stderr, "meshfed-agent capture:", err)
		os.Exit(1)
	}
}
