package podnode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

// DefaultCrashBackOff is the kubelet's first restart delay.
const DefaultCrashBackOff = 10 * time.Second

// Config is the node's configuration (the command's flags).
type Config struct {
	Kubeconfig string
	NodeName   string
	// NodeIP is the node's InternalIP: the API server reaches the node's API there.
	NodeIP string
	// Port is the node API's port (kubectl logs goes through it).
	Port int
	// TLSCert and TLSKey are the node API's serving certificate; ClientCA verifies the API
	// server's client certificate.
	TLSCert, TLSKey, ClientCA string
	// Dir holds images, pods and logs.
	Dir string
	// ClusterNetns is the cluster's network namespace, Gateway its address (pods' default
	// route) and PodCIDR the range pod addresses come from.
	ClusterNetns, Gateway, PodCIDR string
	// ClusterDNS is the nameserver written into pods' resolv.conf ("" writes none);
	// ClusterDomain the cluster's DNS domain.
	ClusterDNS, ClusterDomain string
	// InsecureRegistries are spoken to over plain HTTP.
	InsecureRegistries []string
	// CrashBackOff is the first restart delay (the kubelet's is 10 s); it doubles up to 5 m.
	CrashBackOff time.Duration
	// TokenRenewAfter, when set, renews projected tokens this long after they were issued
	// instead of at 80 % of their lifetime.
	TokenRenewAfter time.Duration
	// LogLevel is the lowest level logged.
	LogLevel slog.Level
}

// Run registers the node and runs its pods until ctx ends; then it stops every pod.
func Run(ctx context.Context, cfg Config) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx = vklog.WithLogger(ctx, vkslog.FromSlog(logger))
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	// A pod start costs about ten requests (token, ConfigMap, Services, status, Events):
	// client-go's default of 5 per second would make each take two seconds.
	restCfg.QPS, restCfg.Burst = 100, 200
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster()
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName})

	tlsConfig, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	auth, err := nodeutil.WebhookAuth(client, cfg.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
		ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", cfg.ClientCA)
		if err != nil {
			return err
		}
		c.AuthnConfig.ClientCertificateCAContentProvider = ca
		return nil
	})
	if err != nil {
		return fmt.Errorf("node API authentication: %w", err)
	}
	mux := http.NewServeMux()
	var provider *Provider
	n, err := nodeutil.NewNode(cfg.NodeName,
		func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			p, err := newProvider(ctx, cfg, client, recorder)
			if err != nil {
				return nil, nil, err
			}
			describeNode(pc.Node, cfg, p.network.capacity())
			provider = p
			return p, nil, nil
		},
		nodeutil.WithClient(client),
		nodeutil.AttachProviderRoutes(mux),
		func(nc *nodeutil.NodeConfig) error {
			nc.HTTPListenAddr = net.JoinHostPort(cfg.NodeIP, strconv.Itoa(cfg.Port))
			nc.TLSConfig = tlsConfig
			nc.Handler = nodeutil.WithAuth(auth, mux)
			nc.EventRecorder = recorder
			nc.NumWorkers = 4
			// The provider resolves the environment when a container starts, as a
			// kubelet does: only then is the pod's address known (status.podIP).
			nc.SkipDownwardAPIResolution = true
			return nil
		},
	)
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-runErr:
		return err
	}
	<-ctx.Done()
	provider.shutdown()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// describeNode fills the Node object the node registers: its address, the port of its
// API, what it can hold.
func describeNode(n *corev1.Node, cfg Config, pods int) {
	n.Labels[corev1.LabelOSStable] = "linux"
	n.Labels[corev1.LabelArchStable] = runtime.GOARCH
	delete(n.Labels, "type")
	n.Spec.PodCIDR = cfg.PodCIDR
	n.Spec.PodCIDRs = []string{cfg.PodCIDR}
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: cfg.NodeIP},
		{Type: corev1.NodeHostName, Address: cfg.NodeName},
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(cfg.Port)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem: "linux", Architecture: runtime.GOARCH,
		KubeletVersion: "v1.36.3-meshfed-testbed", ContainerRuntimeVersion: "process://meshfed-testbed",
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
	}
	n.Status.Capacity, n.Status.Allocatable = capacity, capacity
}

// serverTLS is the node API's TLS: its serving certificate, and the API server's client
// certificate verified against the cluster CA when presented.
func serverTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("node API certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client CA %s holds no certificate", cfg.ClientCA)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
