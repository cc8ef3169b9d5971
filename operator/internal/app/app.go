package app

import (
	"cmp"
	"context"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/ca"
	"github.com/meshfed/meshfed/operator/internal/controller/clustersetip"
	"github.com/meshfed/meshfed/operator/internal/controller/mesh"
	"github.com/meshfed/meshfed/operator/internal/controller/meshfederation"
	"github.com/meshfed/meshfed/operator/internal/controller/routes"
	"github.com/meshfed/meshfed/operator/internal/controller/servicepolicy"
	"github.com/meshfed/meshfed/operator/internal/feed"
	"github.com/meshfed/meshfed/operator/internal/inject"
	"github.com/meshfed/meshfed/operator/internal/xds"
	meshwebhook "github.com/meshfed/meshfed/operator/webhook"
)

// Version is the operator's version, set at build time with -ldflags -X.
var Version = "dev"

// LeaderElectionID names the Lease the operator replicas compete for.
const LeaderElectionID = "meshfed-operator.meshfed.io"

var buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_build_info",
	Help: "Always 1; the labels tell the operator's version and role.",
}, []string{"version", "role"})

func init() {
	crmetrics.Registry.MustRegister(buildInfo)
}

// NewScheme returns a scheme with every API type the operator reads or writes.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	utilruntime.Must(aboutv1alpha1.AddToScheme(s))
	utilruntime.Must(mcsv1beta1.Install(s))
	utilruntime.Must(gatewayv1.Install(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}

// What every operator needs, hub or member (config/rbac/shared): Events, and the reviews
// the metrics filter asks the API server for.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// cacheOptions limits what the cache holds: census Leases of the operator's namespace
// (where its Role lets it read them), the ConfigMaps meshfed writes (not every ConfigMap
// of the cluster), the CertificateRequests of the CA service (mesh namespace) and of
// members' intermediates (federation namespace), Secrets of those namespaces and the
// operator's, and of Nodes their pod networks.
func cacheOptions(opts Options) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{meshv1.LabelManagedBy: meshv1.ManagedByValue})
	requests := map[string]cache.Config{}
	if opts.Role.Member() {
		requests[opts.MeshNamespace] = cache.Config{}
	}
	if opts.Role.Hub() {
		requests[cmp.Or(opts.FederationNamespace, opts.PodNamespace)] = cache.Config{}
	}
	// Secrets only of the namespaces meshfed keeps its own in (the operator may read no
	// other), and the gateway's Deployment and PodDisruptionBudget only in the mesh one.
	owned := map[string]cache.Config{opts.PodNamespace: {}}
	for ns := range requests {
		owned[ns] = cache.Config{}
	}
	byObject := map[client.Object]cache.ByObject{
		&corev1.ConfigMap{}:         {Label: managed},
		&cmapi.CertificateRequest{}: {Namespaces: requests},
		&corev1.Node{}:              {Transform: podCIDRsOnly},
		&corev1.Secret{}:            {Namespaces: owned},
	}
	if opts.Role.Member() {
		mesh := map[string]cache.Config{opts.MeshNamespace: {}}
		byObject[&appsv1.Deployment{}] = cache.ByObject{Namespaces: mesh}
		byObject[&policyv1.PodDisruptionBudget{}] = cache.ByObject{Namespaces: mesh}
		byObject[&networkingv1.NetworkPolicy{}] = cache.ByObject{Namespaces: mesh}
	}
	byObject[&coordinationv1.Lease{}] = cache.ByObject{Namespaces: map[string]cache.Config{opts.PodNamespace: {}}}
	return cache.Options{ByObject: byObject}
}

// podCIDRsOnly keeps of a Node what the control plane reads, its pod networks: Nodes are
// large (images, conditions) and change often.
func podCIDRsOnly(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
	}, nil
}

// signal notes a change on ch without blocking; one pending signal stands for many.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run builds the manager for opts and runs it until ctx ends.
func Run(ctx context.Context, opts Options) error {
	log := ctrl.Log.WithName("setup")
	// The --kubeconfig flag belongs to controller-runtime; without it the in-cluster
	// config or $KUBECONFIG is used.
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w (pass --kubeconfig, set $KUBECONFIG or run in a cluster)", err)
	}
	restConfig.QPS, restConfig.Burst = float32(opts.QPS), opts.Burst
	restConfig.UserAgent = "meshfed-operator/" + Version

	shutdown := opts.ShutdownTimeout
	mgr, err := ctrl.NewManager(restConfig, manager.Options{
		Scheme: NewScheme(),
		// Metrics over HTTPS, for callers the API server authenticates (TokenReview) and
		// authorises for GET /metrics (SubjectAccessReview; ClusterRole
		// meshfed-metrics-reader): they tell who is connected and what is exported.
		Metrics: metricsserver.Options{BindAddress: opts.MetricsAddr, SecureServing: true,
			FilterProvider: filters.WithAuthenticationAndAuthorization},
		HealthProbeBindAddress:  opts.ProbeAddr,
		PprofBindAddress:        opts.PprofAddr,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		// Releasing the Lease on exit lets a new replica take over without waiting for
		// the lease to expire.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &shutdown,
		Cache:                         cacheOptions(opts),
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: opts.WebhookHost, Port: opts.WebhookPort, CertDir: opts.WebhookCertDir,
		}),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	buildInfo.WithLabelValues(Version, string(opts.Role)).Set(1)
	if opts.WebhookPort != 0 {
		if err := meshwebhook.Setup(mgr, mgr.GetAPIReader(), cmp.Or(opts.FederationNamespace, opts.PodNamespace)); err != nil {
			return fmt.Errorf("set up the admission webhooks: %w", err)
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return fmt.Errorf("add webhook ready check: %w", err)
		}
	}
	if opts.Role.Member() {
		// The xDS server's changes go to the Mesh controller and to the replica's census.
		changed, counted := make(chan struct{}, 1), make(chan struct{}, 1)
		f := &feed.Feed{Client: mgr.GetClient(), Cache: mgr.GetCache(), BindHost: opts.XDSBindHost, Log: mgr.GetLogger().WithName("xds")}
		f.Server = xds.NewServer(f.Log, f.Build, func() {
			signal(changed)
			signal(counted)
		})
		if err := mgr.Add(f); err != nil {
			return fmt.Errorf("add the xDS server: %w", err)
		}
		tlsSource := &ca.TLSSource{Client: mgr.GetClient(), Namespace: opts.MeshNamespace}
		f.Server.SetSecurity(&xds.Security{TLS: tlsSource, MeshNamespace: opts.MeshNamespace,
			MaxConnections: opts.XDSMaxConnections, MaxConnectionAge: opts.XDSMaxConnectionAge,
			TrustDomain: func(ctx context.Context) (string, error) {
				var m meshv1.Mesh
				if err := mgr.GetClient().Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &m); err != nil {
					return "", err
				}
				return m.Spec.TrustDomainOrDefault(), nil
			},
			// A pod injected with the envoy template is an Envoy node; any other workload
			// (a pod of the grpc-agent template, or no pod at all) a proxyless one.
			GroupOf: func(ctx context.Context, namespace, name string) (string, error) {
				var pod corev1.Pod
				err := mgr.GetAPIReader().Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod)
				if apierrors.IsNotFound(err) {
					return xds.GroupGRPC, nil
				}
				if err != nil {
					return "", err
				}
				if pod.Annotations[inject.AnnotationInjected] == inject.TemplateEnvoy {
					return xds.GroupEnvoy, nil
				}
				return xds.GroupGRPC, nil
			}})
		if opts.census() {
			if err := mgr.Add(&xds.Census{
				Client: mgr.GetClient(), Server: f.Server, Changed: counted, Log: f.Log.WithName("census"),
				Namespace: opts.PodNamespace, Pod: opts.PodName, PodUID: types.UID(opts.PodUID),
			}); err != nil {
				return fmt.Errorf("add the xDS census: %w", err)
			}
		}
		if err := mgr.Add(&ca.Server{Client: mgr.GetClient(), Pods: mgr.GetAPIReader(), Namespace: opts.MeshNamespace,
			Addr: fmt.Sprintf(":%d", caapi.Port), TLS: tlsSource, Log: mgr.GetLogger().WithName("ca")}); err != nil {
			return fmt.Errorf("add the CA service: %w", err)
		}
		if opts.WebhookPort != 0 {
			mgr.GetWebhookServer().Register(meshwebhook.InjectPath, &webhook.Admission{Handler: &meshwebhook.Injector{
				Client: mgr.GetClient(), Decoder: admission.NewDecoder(mgr.GetScheme()),
				AgentImage: opts.AgentImage, EnvoyImage: opts.EnvoyImage, OperatorNamespace: opts.PodNamespace,
			}})
		}
		clusterSetIPs := &clustersetip.Reconciler{
			Client:   mgr.GetClient(),
			Recorder: mgr.GetEventRecorderFor("meshfed-member"), //nolint:staticcheck // as the Mesh controller's
			Changed:  changed,
		}
		if err := clusterSetIPs.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the ClusterSet IP controller: %w", err)
		}
		if err := (&mesh.Reconciler{
			Client:            mgr.GetClient(),
			Recorder:          mgr.GetEventRecorderFor("meshfed-member"), //nolint:staticcheck // the events.k8s.io recorder has another interface; moving both controllers is its own change
			Namespace:         opts.MeshNamespace,
			XDS:               f.Server,
			StatusChanged:     changed,
			ClusterSetIPs:     clusterSetIPs,
			OperatorNamespace: opts.PodNamespace,
			Census:            opts.census(),
			Reader:            mgr.GetAPIReader(),
			GatewayImage:      opts.GatewayImage,
			DNSImage:          opts.DNSImage,
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the Mesh controller: %w", err)
		}
		if err := (&servicepolicy.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the ServicePolicy controller: %w", err)
		}
		if err := setupRoutes(mgr, log); err != nil {
			return err
		}
	}
	if opts.Role.Hub() {
		if err := (&meshfederation.Reconciler{
			Namespace:   cmp.Or(opts.FederationNamespace, opts.PodNamespace),
			Client:      mgr.GetClient(),
			Recorder:    mgr.GetEventRecorderFor("meshfed-hub"), //nolint:staticcheck // the events.k8s.io recorder has another interface; moving both controllers is its own change
			GracePeriod: opts.MemberGracePeriod,
			TokenTTL:    opts.MemberTokenTTL,
			QPS:         float32(opts.MemberQPS),
			Burst:       opts.MemberBurst,
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the MeshFederation controller: %w", err)
		}
	}

	log.Info("starting manager", "role", opts.Role, "version", Version, "leaderElection", opts.LeaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	log.Info("manager stopped")
	return nil
}

// setupRoutes starts the route status controllers of the route kinds the cluster serves
// (the Gateway API CRDs, config/gateway-api); without them routes are off, as for the
// control plane (feed).
func setupRoutes(mgr ctrl.Manager, log logr.Logger) error {
	for _, kind := range []routes.Kind{routes.GRPCRoutes, routes.HTTPRoutes} {
		_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gatewayv1.GroupName, Kind: kind.Name}, gatewayv1.GroupVersion.Version)
		if meta.IsNoMatchError(err) {
			log.Info("a Gateway API route CRD is not installed: routes are off until it is and the operator restarts (kubectl apply -k config/gateway-api)", "kind", kind.Name)
			continue
		}
		if err != nil {
			return fmt.Errorf("look up the %s kind: %w", kind.Name, err)
		}
		if err := (&routes.Reconciler{Client: mgr.GetClient(), Kind: kind}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the %s controller: %w", kind.Name, err)
		}
	}
	return nil
}
