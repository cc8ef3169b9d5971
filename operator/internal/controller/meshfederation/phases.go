package meshfederation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"golang.org/x/sync/errgroup"

	"github.com/meshfed/meshfed/federation/mcs"
	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// exportView is one ServiceExport of a member with its Service.
type exportView struct {
	obj    *mcsv1beta1.ServiceExport
	export mcs.Export
}

func (r *Reconciler) reconcileNormal(ctx context.Context, s *scope) (ctrl.Result, error) {
	r.connectMembers(ctx, s)
	errs := []error{r.cleanLeavingMembers(ctx, s)}
	if err := r.gather(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	errs = append(errs, r.reconcileTrust(ctx, s))
	g, gctx := errgroup.WithContext(ctx)
	for _, mv := range s.members {
		if !mv.usable {
			continue
		}
		g.Go(func() error {
			mv.syncErr = r.syncMember(gctx, s, mv)
			mv.synced = mv.syncErr == nil
			return nil
		})
	}
	_ = g.Wait()
	for _, mv := range s.members {
		if mv.syncErr != nil {
			errs = append(errs, fmt.Errorf("sync member %s: %w", mv.spec.Name, mv.syncErr))
		}
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, errors.Join(errs...)
}

// connectMembers registers every member of the spec with the registry and records how it
// is doing. A member whose Secret or kubeconfig is wrong gets an error naming the Secret.
func (r *Reconciler) connectMembers(ctx context.Context, s *scope) {
	for _, spec := range s.fed.Spec.Members {
		mv := &memberView{spec: spec}
		s.members = append(s.members, mv)
		s.byName[spec.Name] = mv
		kubeconfig, err := r.readKubeconfig(ctx, s.fed.Namespace, spec.KubeconfigSecretRef)
		if err == nil {
			mv.member, err = r.registry.Connect(s.owner, spec.Name, kubeconfig)
			if err != nil {
				err = fmt.Errorf("Secret %s/%s key %q: %w", s.fed.Namespace, spec.KubeconfigSecretRef.Name, secretKey(spec.KubeconfigSecretRef), err)
			}
		}
		if err != nil {
			mv.err = err
			if m, ok := r.registry.Lookup(s.owner, spec.Name); ok {
				mv.member = m // keep serving the last good kubeconfig's view
			}
		}
		if mv.member != nil {
			mv.state = mv.member.State()
			mv.known = mv.state.Synced
			mv.usable = mv.state.Connected && mv.state.Synced && mv.err == nil
			if mv.err == nil && !mv.usable {
				mv.err = mv.state.Err
				if mv.err == nil {
					mv.err = errors.New("waiting for the member's cache to sync")
				}
			}
		}
		if err == nil {
			r.renewToken(ctx, s, mv, kubeconfig)
		}
	}
}

func secretKey(ref meshv1.SecretKeyRef) string {
	if ref.Key == "" {
		return "kubeconfig"
	}
	return ref.Key
}

// errSecretNotFound is wrapped by readKubeconfig's error when the Secret does not exist.
var errSecretNotFound = errors.New("not found")

func (r *Reconciler) readKubeconfig(ctx context.Context, namespace string, ref meshv1.SecretKeyRef) ([]byte, error) {
	var secret corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("kubeconfig Secret %s/%s %w: create it (docs/user-guide.md, \"Join a member\")", namespace, ref.Name, errSecretNotFound)
		}
		return nil, fmt.Errorf("read kubeconfig Secret %s/%s: %w", namespace, ref.Name, err)
	}
	data, ok := secret.Data[secretKey(ref)]
	if !ok || len(data) == 0 {
		return nil, fmt.Errorf("kubeconfig Secret %s/%s has no key %q: put the kubeconfig there or set kubeconfigSecretRef.key", namespace, ref.Name, secretKey(ref))
	}
	return data, nil
}

// gather reads every known member's exports, Services, EndpointSlices and Mesh from its
// cache, decides which members are withdrawn or unknown, and aggregates the exports.
func (r *Reconciler) gather(ctx context.Context, s *scope) error {
	now := time.Now()
	var exports []mcs.Export
	for _, mv := range s.members {
		if !mv.known {
			// Its exports are unknown: deleting imports now could drop what it exports.
			// A hub that just started waits a grace period for it; after that the member
			// is disconnected: its endpoints are withdrawn, the imports it was listed in
			// stay (syncImports).
			if left := r.GracePeriod - now.Sub(r.started); left > 0 {
				s.incomplete = true
				s.requeue(left)
			} else {
				mv.withdrawn = true
				s.withdrawn[mv.spec.Name] = true
				s.unknown[mv.spec.Name] = true
			}
			continue
		}
		if !mv.state.Connected {
			if left := r.GracePeriod - now.Sub(mv.state.Since); left > 0 {
				s.requeue(left)
			} else {
				mv.withdrawn = true
				s.withdrawn[mv.spec.Name] = true
			}
		}
		if err := checkClusterID(ctx, mv); err != nil {
			// Another cluster than the one named, or one joined under another name: nothing
			// it exports counts, nothing is written into it or signed for it.
			mv.err, mv.usable, mv.withdrawn = err, false, true
			s.withdrawn[mv.spec.Name] = true
			continue
		}
		src, err := readMember(ctx, mv)
		if err != nil {
			return fmt.Errorf("read member %s: %w", mv.spec.Name, err)
		}
		s.sources[mv.spec.Name] = src
		for _, e := range mv.exports {
			exports = append(exports, e.export)
		}
	}
	s.agg = mcs.Aggregate(exports, s.exportPolicy)
	s.policies = map[mcs.ServiceKey]string{}
	for _, tp := range s.fed.Spec.TrafficPolicies {
		raw, err := json.Marshal(tp)
		if err != nil {
			return fmt.Errorf("traffic policy of %s/%s: %w", tp.Service.Namespace, tp.Service.Name, err)
		}
		s.policies[mcs.ServiceKey{Namespace: tp.Service.Namespace, Name: tp.Service.Name}] = string(raw)
	}
	return nil
}

func (s *scope) requeue(after time.Duration) {
	after += 100 * time.Millisecond
	if s.requeueAfter == 0 || after < s.requeueAfter {
		s.requeueAfter = after
	}
}

// clusterIDTimeout bounds the read of a member's cluster ID: a member that went away since
// its last probe must not hold the pass up.
const clusterIDTimeout = 2 * time.Second

// checkClusterID refuses a member whose About API cluster ID (the ClusterProperty
// cluster.clusterset.k8s.io its operator writes, KEP-2149) is not its name in the
// MeshFederation. It reads the member's API server, not a cache: a member whose operator
// predates the About API (no such CRD, or no property yet) is taken at its name, and still
// syncs, where a watch of a kind it lacks would keep its whole cache from syncing. Only a
// cluster ID that differs refuses the member: one that cannot be read now (the
// member is away, its API server slow) is read again at the next pass.
func checkClusterID(ctx context.Context, mv *memberView) error {
	if !mv.state.Connected {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, clusterIDTimeout)
	defer cancel()
	var id aboutv1alpha1.ClusterProperty
	if err := mv.member.APIReader().Get(ctx, client.ObjectKey{Name: aboutv1alpha1.PropertyClusterID}, &id); err != nil {
		if !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			log.FromContext(ctx).Info("cannot read the member's cluster ID", "member", mv.spec.Name, "error", err.Error())
		}
		return nil
	}
	if id.Spec.Value != mv.spec.Name {
		return fmt.Errorf("refused: its ClusterProperty %s says it is %q, not %q: give the member its cluster's name in spec.members (or fix the property, which its Mesh's clusterName sets)",
			aboutv1alpha1.PropertyClusterID, id.Spec.Value, mv.spec.Name)
	}
	return nil
}

// readMember reads a member's Mesh, exports, their Services and their EndpointSlices.
func readMember(ctx context.Context, mv *memberView) (mcs.Source, error) {
	c := mv.member.Client()
	var mesh meshv1.Mesh
	if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); err == nil {
		mv.mesh = &mesh
	} else if !apierrors.IsNotFound(err) {
		return mcs.Source{}, err
	}
	// The lists are read-only here and copied before any write, so they skip the cache's
	// deep copy: a reconcile reads every member's exports, Services and EndpointSlices.
	var list mcsv1beta1.ServiceExportList
	if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return mcs.Source{}, err
	}
	var services corev1.ServiceList
	if err := c.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return mcs.Source{}, err
	}
	byKey := make(map[mcs.ServiceKey]*corev1.Service, len(services.Items))
	for i := range services.Items {
		byKey[mcs.ServiceKey{Namespace: services.Items[i].Namespace, Name: services.Items[i].Name}] = &services.Items[i]
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.MatchingLabels{discoveryv1.LabelManagedBy: meshv1.KubeEndpointSliceManager}, client.UnsafeDisableDeepCopy); err != nil {
		return mcs.Source{}, err
	}
	src := mcs.Source{Cluster: mv.spec.Name, Slices: map[mcs.ServiceKey][]discoveryv1.EndpointSlice{}}
	if mv.mesh != nil {
		src.Network = mv.mesh.Spec.Network
	}
	exported := map[mcs.ServiceKey]bool{}
	for i := range list.Items {
		se := &list.Items[i]
		key := mcs.ServiceKey{Namespace: se.Namespace, Name: se.Name}
		e := mcs.Export{Cluster: mv.spec.Name, Key: key, Created: se.CreationTimestamp.Time, Service: byKey[key],
			ExportedLabels: se.Spec.ExportedLabels, ExportedAnnotations: se.Spec.ExportedAnnotations}
		mv.exports = append(mv.exports, exportView{obj: se, export: e})
		exported[key] = true
	}
	for _, sl := range slices.Items {
		key := mcs.ServiceKey{Namespace: sl.Namespace, Name: sl.Labels[discoveryv1.LabelServiceName]}
		if exported[key] {
			src.Slices[key] = append(src.Slices[key], sl)
		}
	}
	return src, nil
}
