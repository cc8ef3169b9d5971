package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/operator/internal/xds"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshpeers,verbs=get;list;watch

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
	for _, obj := range []client.Object{&meshv1.Mesh{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}, &mcsv1beta1.ServiceImport{}, &meshv1.MeshPeer{}} {
		inf, err := f.Cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watch %T for xDS: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(trigger); err != nil {
			return fmt.Errorf("watch %T for xDS: %w", obj, err)
		}
	}
	return f.Server.Start(ctx)
}

// ErrNoMesh says the member has no Mesh yet; the control plane waits for one.
var ErrNoMesh = errors.New("no Mesh named " + meshv1.MeshSingletonName + " in this cluster: the control plane waits for it")

// Build reads the member's Mesh, Services, EndpointSlices, ServiceImports and MeshPeers
// and translates them.
func (f *Feed) Build(ctx context.Context) (*xds.Config, error) {
	var m meshv1.Mesh
	if err := f.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &m); apierrors.IsNotFound(err) {
		return nil, ErrNoMesh
	} else if err != nil {
		return nil, err
	}
	if c := Ready(&m); c.Status != metav1.ConditionTrue {
		return nil, fmt.Errorf("the Mesh is not valid, so its configuration is not served: %s", c.Message)
	}
	in := translate.Inputs{Mesh: &m}
	var services corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	var imports mcsv1beta1.ServiceImportList
	var peers meshv1.MeshPeerList
	for _, list := range []client.ObjectList{&services, &slices, &imports, &peers} {
		if err := f.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
	}
	in.Services, in.Slices, in.Imports, in.Peers = services.Items, slices.Items, imports.Items, peers.Items
	model, problems := translate.BuildModel(in)
	for _, p := range problems {
		f.Log.Error(p, "part of the member's configuration is left out")
	}
	if f.translator == nil {
		f.translator = translate.NewTranslator()
	}
	cfg := &xds.Config{Resources: f.translator.Translate(model), Address: net.JoinHostPort(f.BindHost, strconv.Itoa(int(xdsPort(&m))))}
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

// DefaultXDSPort is the xDS port of a Mesh that sets none.
const DefaultXDSPort = 15010

func xdsPort(m *meshv1.Mesh) int32 {
	if p := m.Spec.ControlPlane.XDSPort; p != 0 {
		return p
	}
	return DefaultXDSPort
}

// controlPlaneStatus reports the xDS server in the Mesh status.
func (r *Reconciler) controlPlaneStatus(m *meshv1.Mesh) metav1.Condition {
	st := r.XDS.Status()
	m.Status.ConnectedProxies, m.Status.SnapshotVersion = int32(st.Proxies), st.Version
	cond := metav1.Condition{Type: meshv1.ConditionControlPlaneReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonServing,
		Message: fmt.Sprintf("serving xDS configuration %s on port %d", st.Version, xdsPort(m))}
	switch {
	case st.Err != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonConfigNotServed, st.Err.Error()
		if st.Version != "" {
			cond.Message += fmt.Sprintf(" (proxies keep configuration %s)", st.Version)
		}
	case st.Version == "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonPending, "no xDS configuration built yet"
	}
	return cond
}

// statusEvents turns xDS server changes (a new snapshot, proxies coming and going) into
// Mesh reconciles, at most one a second.
func statusEvents(ctx context.Context, kick <-chan struct{}, out chan<- event.GenericEvent) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		m := &meshv1.Mesh{}
		m.Name = meshv1.MeshSingletonName
		select {
		case out <- event.GenericEvent{Object: m}:
		case <-ctx.Done():
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
