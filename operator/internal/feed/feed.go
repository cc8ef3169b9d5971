// Package feed turns a member's own objects into its xDS configuration: it watches the
// Mesh, Services, EndpointSlices (local and imported), ServiceImports and MeshPeers in the
// manager's cache, builds the translate model from them and hands the xDS server what to
// serve. It reads only the member's API server and never writes to it; the Mesh
// reconciler reports the server's state.
package feed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/operator/internal/xds"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshpeers,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=servicepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes;httproutes,verbs=get;list;watch

// Feed builds the member's xDS configuration from the manager's cache, and pushes when
// anything it reads changes. It runs on every replica of the operator, leader or not, so
// that every replica serves proxies.
type Feed struct {
	Client client.Reader
	Cache  cache.Cache
	// BindHost is the address the xDS server binds; empty means every address.
	BindHost string
	Server   *xds.Server
	Log      logr.Logger

	// translator keeps each service's resources between builds; only the server's push
	// loop calls Build, one build at a time.
	translator *translate.Translator
	// routes is set once GRPCRoutes and HTTPRoutes are watched (their CRDs are installed).
	routes atomic.Bool
}

// NeedLeaderElection is false: see Feed.
func (f *Feed) NeedLeaderElection() bool { return false }

// Start watches what the configuration depends on and runs the xDS server.
func (f *Feed) Start(ctx context.Context) error {
	trigger := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { f.Server.Trigger() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(metav1.Object)
			c, ok2 := cur.(metav1.Object)
			if !ok1 || !ok2 || o.GetResourceVersion() != c.GetResourceVersion() {
				f.Server.Trigger()
			}
		},
		DeleteFunc: func(any) { f.Server.Trigger() },
	}
	for _, obj := range []client.Object{&meshv1.Mesh{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}, &mcsv1beta1.ServiceImport{}, &meshv1.MeshPeer{}, &corev1.Node{}, &meshv1.ServicePolicy{}, &gatewayv1.GRPCRoute{}, &gatewayv1.HTTPRoute{}} {
		inf, err := f.Cache.GetInformer(ctx, obj)
		route := isRoute(obj)
		if route && meta.IsNoMatchError(err) {
			f.Log.Info("a Gateway API route CRD is not installed: routes are off until the CRDs are and the operator restarts (kubectl apply -k config/gateway-api)", "kind", fmt.Sprintf("%T", obj))
			f.routes.Store(false)
			break // the route kinds are last
		}
		if err != nil {
			return fmt.Errorf("watch %T for xDS: %w", obj, err)
		}
		if route {
			f.routes.Store(true)
		}
		if _, err := inf.AddEventHandler(trigger); err != nil {
			return fmt.Errorf("watch %T for xDS: %w", obj, err)
		}
	}
	return f.Server.Start(ctx)
}

func isRoute(obj client.Object) bool {
	switch obj.(type) {
	case *gatewayv1.GRPCRoute, *gatewayv1.HTTPRoute:
		return true
	}
	return false
}

// ErrNoMesh says the member has no Mesh yet; the control plane waits for one.
var ErrNoMesh = errors.New("no Mesh named " + meshv1.MeshSingletonName + " in this cluster: the control plane waits for it")

// Build reads the member's Mesh, Services, EndpointSlices, ServiceImports, MeshPeers,
// ServicePolicies, GRPCRoutes and HTTPRoutes and translates them.
func (f *Feed) Build(ctx context.Context) (*xds.Config, error) {
	var m meshv1.Mesh
	if err := f.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &m); apierrors.IsNotFound(err) {
		return nil, ErrNoMesh
	} else if err != nil {
		return nil, err
	}
	if errs := meshv1.CheckMesh(&m); len(errs) > 0 {
		return nil, fmt.Errorf("the Mesh is not valid, so its configuration is not served: %w", errs.ToAggregate())
	}
	in := translate.Inputs{Mesh: &m}
	var services corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	var imports mcsv1beta1.ServiceImportList
	var peers meshv1.MeshPeerList
	var nodes corev1.NodeList
	var policies meshv1.ServicePolicyList
	for _, list := range []client.ObjectList{&services, &slices, &imports, &peers, &nodes, &policies} {
		if err := f.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
	}
	in.Services, in.Slices, in.Imports, in.Peers = services.Items, slices.Items, imports.Items, peers.Items
	in.PodNetworks = podNetworks(nodes.Items)
	in.Policies = policies.Items
	if f.routes.Load() {
		var grpcRoutes gatewayv1.GRPCRouteList
		var httpRoutes gatewayv1.HTTPRouteList
		for _, list := range []client.ObjectList{&grpcRoutes, &httpRoutes} {
			if err := f.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
				return nil, err
			}
		}
		in.GRPCRoutes, in.HTTPRoutes = grpcRoutes.Items, httpRoutes.Items
	}
	model, problems := translate.BuildModel(in)
	for _, p := range problems {
		f.Log.Error(p, "part of the member's configuration is left out")
	}
	if f.translator == nil {
		f.translator = translate.NewTranslator()
	}
	cfg := &xds.Config{Resources: f.translator.Translate(model), Address: net.JoinHostPort(f.BindHost, strconv.Itoa(int(m.Spec.XDSPortOrDefault())))}
	if f.Server.EnvoyConnected() {
		cfg.Envoy = translate.TranslateEnvoy(model)
	}
	if f.Server.GatewayConnected() {
		cfg.Gateway = translate.TranslateGateway(model)
	}
	if d := m.Spec.ControlPlane.PushDebounce; d != nil {
		cfg.Debounce = d.Duration
	}
	return cfg, nil
}

// podNetworks are the Nodes' podCIDRs, each once.
func podNetworks(nodes []corev1.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nodes {
		for _, cidr := range n.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(cidr); err == nil && !slices.Contains(out, p.Masked()) {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}
