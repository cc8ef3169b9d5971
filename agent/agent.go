package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	"github.com/meshfed/meshfed/operator/bootstrap"
)

// Options configure the agent; the injection webhook sets them from the pod and the Mesh.
type Options struct {
	// Who the pod is.
	TrustDomain, Namespace, ServiceAccount, PodName, Cluster string
	// CAAddress is the CA service (host:port; the host is the name its certificate has).
	CAAddress string
	// XDSAddress is the control plane (host:port, likewise).
	XDSAddress string
	// TokenFile is the projected service-account token with audience caapi.Audience.
	TokenFile string
	// TrustDir is the mounted trust-bundle ConfigMap (caapi.TrustBundleConfigMap).
	TrustDir string
	// CredentialsDir is the volume shared with the app: certificate, key, bundle and the
	// xDS bootstrap (BootstrapFile).
	CredentialsDir string
	// ListenXDS is where the app's xDS client connects (the pod's loopback).
	ListenXDS string
	// HealthAddr serves /healthz and /ready (credentials and a first configuration).
	HealthAddr string
	// Lifetime is the certificate lifetime asked for (0: the CA's default); the agent
	// renews at half of it.
	Lifetime time.Duration
	// Refresh is how often the certificate files are re-read by the app (bootstrap).
	Refresh time.Duration
	// Mode is the injection template: ModeGRPC writes the app's gRPC bootstrap, ModeEnvoy
	// the Envoy sidecar's as well.
	Mode string
	Log  *slog.Logger
}

// BootstrapFile is the app's xDS bootstrap in the credentials directory; EnvoyFile is the
// Envoy sidecar's (mode envoy).
const (
	BootstrapFile = "bootstrap.json"
	EnvoyFile     = "envoy.json"
)

// Modes of the agent: the injection template that added it.
const (
	ModeGRPC  = "grpc-agent"
	ModeEnvoy = "envoy"
)

// EnvoyAdminPort is the Envoy sidecar's admin port (on loopback).
const EnvoyAdminPort = 15000

// ListenXDS is where the agent serves the app's xDS streams by default: the pod's loopback.
const ListenXDS = "127.0.0.1:15010"

// SPIFFEID is the pod's identity.
func (o *Options) SPIFFEID() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", o.TrustDomain, o.Namespace, o.ServiceAccount)
}

// NodeID is the xDS node of the pod's app.
func (o *Options) NodeID() string { return o.PodName + "." + o.Namespace }

// Agent gets the pod its identity, keeps it fresh, and carries its xDS streams.
type Agent struct {
	opts Options
	key  *ecdsa.PrivateKey

	mu       sync.Mutex
	creds    *Credentials
	renewAt  time.Time
	bundle   []byte // the trust bundle last read from TrustDir
	ready    atomic.Bool
	upstream *grpc.ClientConn
}

// Run runs the agent until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	a := &Agent{opts: opts, key: key}
	if err := a.writeBootstrap(); err != nil {
		return err
	}
	health, err := net.Listen("tcp", opts.HealthAddr)
	if err != nil {
		return err
	}
	go a.serveHealth(ctx, health)
	for backoff := time.Second; a.current() == nil; backoff = min(2*backoff, 30*time.Second) {
		if err := a.renew(ctx); err != nil {
			opts.Log.Error("no workload certificate yet; trying again", "error", err, "in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
		}
	}
	a.upstream, err = grpc.NewClient(opts.XDSAddress, grpc.WithTransportCredentials(credentials.NewTLS(a.tlsConfig(opts.XDSAddress))))
	if err != nil {
		return err
	}
	defer a.upstream.Close()
	lis, err := net.Listen("tcp", opts.ListenXDS)
	if err != nil {
		return err
	}
	proxy := newProxyServer(a.upstream)
	go func() {
		<-ctx.Done()
		proxy.Stop()
	}()
	go func() { _ = proxy.Serve(lis) }()
	go a.probe(ctx)
	a.keepFresh(ctx)
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (a *Agent) current() *Credentials {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creds
}

// writeBootstrap writes the app's xDS bootstrap, and the Envoy sidecar's in mode envoy:
// the control plane is the agent.
func (a *Agent) writeBootstrap() error {
	boot, err := bootstrap.JSON(bootstrap.Options{XDSAddress: a.opts.ListenXDS, NodeID: a.opts.NodeID(), Cluster: a.opts.Cluster,
		CertDir: a.opts.CredentialsDir, Refresh: a.opts.Refresh})
	if err != nil {
		return err
	}
	files := map[string][]byte{BootstrapFile: boot}
	if a.opts.Mode == ModeEnvoy {
		b, err := bootstrap.Envoy(bootstrap.EnvoyOptions{XDSAddress: a.opts.ListenXDS, NodeID: a.opts.NodeID(), Cluster: a.opts.Cluster, AdminPort: EnvoyAdminPort})
		if err != nil {
			return err
		}
		if err := bootstrap.CheckEnvoy(b); err != nil {
			return fmt.Errorf("the Envoy bootstrap: %w", err)
		}
		if files[EnvoyFile], err = bootstrap.EnvoyJSON(b); err != nil {
			return err
		}
	}
	for name, data := range files {
		path := filepath.Join(a.opts.CredentialsDir, name)
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
	}
	return nil
}

// readTrust reads the trust-bundle ConfigMap's files.
func (a *Agent) readTrust() (bundle []byte, intermediate string, err error) {
	bundle, err = os.ReadFile(filepath.Join(a.opts.TrustDir, caapi.TrustBundleKey))
	if err != nil {
		return nil, "", fmt.Errorf("trust bundle: %w (is ConfigMap %s in the namespace?)", err, caapi.TrustBundleConfigMap)
	}
	fp, _ := os.ReadFile(filepath.Join(a.opts.TrustDir, caapi.IntermediateKey))
	return bundle, strings.TrimSpace(string(fp)), nil
}

// renew asks the CA for a new certificate and writes it.
func (a *Agent) renew(ctx context.Context) error {
	bundle, _, err := a.readTrust()
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return errors.New("the trust bundle holds no certificate")
	}
	creds, err := a.askCA(ctx, a.key, roots)
	if err != nil {
		return err
	}
	// The bundle the app trusts is the ConfigMap's: it is what the member holds now.
	creds.BundlePEM, creds.Roots = bundle, roots
	if err := writeCredentials(a.opts.CredentialsDir, creds); err != nil {
		return err
	}
	leaf := creds.Leaf()
	a.mu.Lock()
	a.creds, a.bundle = creds, bundle
	a.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	a.mu.Unlock()
	certificates.Inc()
	a.opts.Log.Info("workload certificate issued", "id", a.opts.SPIFFEID(), "notAfter", leaf.NotAfter, "issuer", leaf.Issuer.String())
	return nil
}

// keepFresh renews at half the lifetime, at once when the member's intermediate changes
// (a root rotation's Reissue), and rewrites the bundle when the ConfigMap's changes.
func (a *Agent) keepFresh(ctx context.Context) {
	backoff := time.Second
	next := time.Time{}
	for sleep(ctx, time.Second) {
		bundle, intermediate, err := a.readTrust()
		if err != nil {
			a.opts.Log.Error("reading the trust bundle failed; keeping the current one", "error", err)
			continue
		}
		a.mu.Lock()
		creds, renewAt, held := a.creds, a.renewAt, a.bundle
		a.mu.Unlock()
		due := time.Now().After(renewAt) || (intermediate != "" && intermediate != creds.IssuerFingerprint())
		if due && time.Now().After(next) {
			if err := a.renew(ctx); err != nil {
				a.opts.Log.Error("renewing the workload certificate failed; the current one stays", "error", err, "retryIn", backoff)
				next, backoff = time.Now().Add(backoff), min(2*backoff, time.Minute)
				continue
			}
			backoff = time.Second
			continue
		}
		if !bytes.Equal(bundle, held) {
			if err := a.rewriteBundle(creds, bundle); err != nil {
				a.opts.Log.Error("writing the new trust bundle failed", "error", err)
			}
		}
	}
}

// rewriteBundle writes a new trust bundle beside the current certificate.
func (a *Agent) rewriteBundle(creds *Credentials, bundle []byte) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return errors.New("the new trust bundle holds no certificate")
	}
	next := *creds
	next.BundlePEM, next.Roots = bundle, roots
	if err := writeCredentials(a.opts.CredentialsDir, &next); err != nil {
		return err
	}
	a.mu.Lock()
	a.creds, a.bundle = &next, bundle
	a.mu.Unlock()
	a.opts.Log.Info("trust bundle updated")
	return nil
}

// tlsConfig presents the current certificate and checks the server's against the current
// bundle and the host of addr.
func (a *Agent) tlsConfig(addr string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &a.current().Pair, nil
		},
		// The roots change with a rotation: the chain is verified in VerifyConnection,
		// against the bundle held at the time of the handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the control plane sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: a.current().Roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}

// probe opens an ADS stream of the agent's own and waits for a first configuration: the
// agent is ready once the control plane serves this pod.
func (a *Agent) probe(ctx context.Context) {
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(a.upstream)
	for !a.ready.Load() {
		err := func() error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			stream, err := client.StreamAggregatedResources(ctx)
			if err != nil {
				return err
			}
			node := &corev3.Node{Id: a.opts.NodeID(), Cluster: a.opts.Cluster, Locality: &corev3.Locality{Zone: a.opts.Cluster}}
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
				return err
			}
			if _, err := stream.Recv(); err != nil {
				return err
			}
			return nil
		}()
		if err == nil {
			a.ready.Store(true)
			a.opts.Log.Info("the control plane serves this pod: ready", "xds", a.opts.XDSAddress)
			return
		}
		a.opts.Log.Error("no configuration from the control plane yet", "error", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}
}

func (a *Agent) serveHealth(ctx context.Context, lis net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	started := func() error {
		switch {
		case a.current() == nil:
			return errors.New("no workload certificate yet")
		case !a.ready.Load():
			return errors.New("no configuration from the control plane yet")
		}
		return nil
	}
	// /started: credentials and a first configuration (what comes after the agent in the
	// pod may start); /ready: that, and the Envoy sidecar ready in mode envoy.
	mux.HandleFunc("GET /started", func(w http.ResponseWriter, _ *http.Request) {
		if err := started(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		err := started()
		if err == nil && a.opts.Mode == ModeEnvoy {
			err = envoyReady(r.Context())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", metricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	_ = srv.Serve(lis)
}

// envoyReady asks the Envoy sidecar's admin interface whether it is ready.
func envoyReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/ready", EnvoyAdminPort), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the Envoy sidecar: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the Envoy sidecar is not ready (%s)", resp.Status)
	}
	return nil
}
