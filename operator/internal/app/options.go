package app

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meshfed/meshfed/federation/join"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/inject"
)

// Role selects which controllers the operator runs.
type Role string

// Roles the operator can run.
const (
	RoleHub    Role = "hub"
	RoleMember Role = "member"
	RoleBoth   Role = "both"
)

// Hub reports whether the hub controllers run.
func (r Role) Hub() bool { return r == RoleHub || r == RoleBoth }

// Member reports whether the member controllers run.
func (r Role) Member() bool { return r == RoleMember || r == RoleBoth }

// String implements flag.Value.
func (r *Role) String() string { return string(*r) }

// Set implements flag.Value and accepts only the known roles.
func (r *Role) Set(s string) error {
	switch Role(s) {
	case RoleHub, RoleMember, RoleBoth:
		*r = Role(s)
		return nil
	}
	return fmt.Errorf("unknown role %q: use hub, member or both", s)
}

// Options configure the operator process.
type Options struct {
	// Role selects the controllers to run.
	Role Role
	// MetricsAddr is where Prometheus metrics are served; "0" disables them.
	MetricsAddr string
	// ProbeAddr is where /healthz and /readyz are served.
	ProbeAddr string
	// PprofAddr serves Go's /debug/pprof profiles; empty or "0" (the default) turns it off.
	PprofAddr string
	// LeaderElect turns on leader election so that only one replica reconciles.
	LeaderElect bool
	// LeaderElectionNamespace holds the election Lease; empty means the pod's namespace.
	LeaderElectionNamespace string
	// ShutdownTimeout bounds how long running reconciles may take to finish on SIGTERM.
	ShutdownTimeout time.Duration
	// QPS and Burst of the client to the local API server.
	QPS   float64
	Burst int
	// MemberQPS and MemberBurst pace the hub's clients to each member: a burst of exports
	// turns into two writes per import in every member.
	MemberQPS   float64
	MemberBurst int
	// MemberGracePeriod keeps a disconnected member's endpoints imported elsewhere.
	MemberGracePeriod time.Duration
	// MemberTokenTTL is the life of the tokens the hub renews for itself in each member.
	MemberTokenTTL time.Duration
	// MeshNamespace is where the member keeps its intermediate CA and workload certificates.
	MeshNamespace string
	// WebhookPort serves the admission webhooks over TLS; 0 turns them off.
	WebhookPort int
	// WebhookHost is the address the webhook server binds; empty means every address.
	WebhookHost string
	// WebhookCertDir holds the webhook server's tls.crt and tls.key.
	WebhookCertDir string
	// XDSBindHost is the address the member's xDS server binds (the port is the Mesh's);
	// empty means every address.
	XDSBindHost string
	// GatewayImage is the container image of the east-west gateway the member deploys.
	GatewayImage string
	// DNSImage is the container image of meshfed-dns, the clusterset.local server the
	// member deploys.
	DNSImage string
	// AgentImage is the container image of meshfed-agent, which injection adds to pods;
	// EnvoyImage the Envoy sidecar's of the envoy template.
	AgentImage, EnvoyImage string
	// FederationNamespace is the only namespace whose MeshFederations the hub honours;
	// empty means PodNamespace.
	FederationNamespace string
	// PodNamespace is the operator's namespace, where its Services (CA, xDS, webhook) are
	// ($POD_NAMESPACE from the downward API, or --operator-namespace).
	PodNamespace string
	// PodName and PodUID name the operator's own Pod ($POD_NAME, $POD_UID). With them,
	// each replica publishes its xDS proxy count and the Mesh status counts every
	// replica's; without, only this one's.
	PodName, PodUID string
	// XDSMaxConnections caps the xDS server's connections; XDSMaxConnectionAge closes a
	// connection (gracefully) after a while, so that proxies spread over the replicas.
	XDSMaxConnections   int
	XDSMaxConnectionAge time.Duration
}

// The images of this release the operator deploys: the east-west gateway, meshfed-dns,
// and the agent it injects.
const (
	DefaultGatewayImage = "ghcr.io/meshfed/eastwest-gateway:v0.1.0"
	DefaultDNSImage     = "ghcr.io/meshfed/meshfed-dns:v0.1.0"
	DefaultAgentImage   = "ghcr.io/meshfed/meshfed-agent:v0.1.0"
)

// DefaultOptions returns the options a Deployment of the operator runs with.
func DefaultOptions() Options {
	return Options{
		Role:                RoleMember,
		MetricsAddr:         ":8443",
		ProbeAddr:           ":8081",
		LeaderElect:         true,
		ShutdownTimeout:     30 * time.Second,
		QPS:                 50,
		Burst:               100,
		MemberQPS:           1000,
		MemberBurst:         2000,
		MemberGracePeriod:   30 * time.Second,
		MemberTokenTTL:      join.DefaultTokenTTL,
		MeshNamespace:       meshv1.DefaultMeshNamespace,
		WebhookPort:         9443,
		WebhookCertDir:      "/tmp/k8s-webhook-server/serving-certs",
		GatewayImage:        DefaultGatewayImage,
		DNSImage:            DefaultDNSImage,
		AgentImage:          DefaultAgentImage,
		EnvoyImage:          inject.DefaultEnvoyImage,
		XDSMaxConnections:   20000,
		XDSMaxConnectionAge: 30 * time.Minute,
		PodName:             os.Getenv("POD_NAME"),
		PodNamespace:        cmp.Or(os.Getenv("POD_NAMESPACE"), "meshfed-system"),
		PodUID:              os.Getenv("POD_UID"),
	}
}

// census reports whether the replica knows its Pod, which the xDS census needs.
func (o *Options) census() bool {
	return o.PodName != "" && o.PodUID != ""
}

// BindFlags registers the options as command-line flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.Var(&o.Role, "role", "controllers to run: hub, member or both")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of the Prometheus metrics endpoint (HTTPS; callers need a token allowed to GET /metrics); 0 disables it")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of the /healthz and /readyz endpoints")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", o.PprofAddr, "address of Go's /debug/pprof profiling endpoints; empty or 0 turns them off")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader so that only one replica reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader election Lease; empty means the operator's own namespace")
	fs.DurationVar(&o.ShutdownTimeout, "graceful-shutdown-timeout", o.ShutdownTimeout, "how long running reconciles may take to finish on SIGTERM")
	fs.Float64Var(&o.QPS, "kube-api-qps", o.QPS, "queries per second to the local API server")
	fs.IntVar(&o.Burst, "kube-api-burst", o.Burst, "burst of queries to the local API server")
	fs.Float64Var(&o.MemberQPS, "member-kube-api-qps", o.MemberQPS, "hub: queries per second to each member's API server")
	fs.IntVar(&o.MemberBurst, "member-kube-api-burst", o.MemberBurst, "hub: burst of queries to each member's API server")
	fs.DurationVar(&o.MemberGracePeriod, "member-grace-period", o.MemberGracePeriod,
		"hub: how long a disconnected member's endpoints stay imported in the other members before they are withdrawn")
	fs.DurationVar(&o.MemberTokenTTL, "member-token-ttl", o.MemberTokenTTL,
		fmt.Sprintf("hub: life of the token the hub asks each member for when it renews its own, a third of it before the old one ends (10m to %s)", join.MaxTokenTTL))
	fs.StringVar(&o.MeshNamespace, "mesh-namespace", o.MeshNamespace, "member: namespace of the intermediate CA Secret (meshfed-cacerts), the CA Issuer and workload certificates")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "port of the admission webhook server (TLS); 0 turns the webhooks off")
	fs.StringVar(&o.WebhookHost, "webhook-bind-host", o.WebhookHost, "address the webhook server binds; empty means every address")
	fs.StringVar(&o.GatewayImage, "gateway-image", o.GatewayImage, "member: container image of the east-west gateway")
	fs.StringVar(&o.DNSImage, "dns-image", o.DNSImage, "member: container image of meshfed-dns, the clusterset.local DNS server")
	fs.StringVar(&o.FederationNamespace, "federation-namespace", o.FederationNamespace, "hub: the only namespace whose MeshFederations are honoured (default: the operator's namespace)")
	fs.StringVar(&o.PodNamespace, "operator-namespace", o.PodNamespace, "the operator's namespace, where its Services are (default $POD_NAMESPACE)")
	fs.IntVar(&o.XDSMaxConnections, "xds-max-connections", o.XDSMaxConnections, "member: connections the xDS server serves at once")
	fs.DurationVar(&o.XDSMaxConnectionAge, "xds-max-connection-age", o.XDSMaxConnectionAge, "member: the xDS server closes a connection this long after it opened, so that proxies spread over the replicas")
	fs.StringVar(&o.AgentImage, "agent-image", o.AgentImage, "member: container image of meshfed-agent, which injection adds to pods")
	fs.StringVar(&o.EnvoyImage, "envoy-image", o.EnvoyImage, "member: container image of the Envoy sidecar of the envoy injection template")
	fs.StringVar(&o.XDSBindHost, "xds-bind-host", o.XDSBindHost, "member: address the xDS server binds (its port is the Mesh's spec.controlPlane.xdsPort); empty means every address")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "directory with the webhook server's tls.crt and tls.key")
}
