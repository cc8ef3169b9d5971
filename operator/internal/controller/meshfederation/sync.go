package meshfederation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/clusters"
	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// syncMember writes the federation's view into one member: imports, the other members'
// endpoints, the conditions of the member's own exports, and MeshPeers.
func (r *Reconciler) syncMember(ctx context.Context, s *scope, mv *memberView) error {
	c := mv.member.Client()
	var namespaces corev1.NamespaceList
	if err := c.List(ctx, &namespaces); err != nil {
		return err
	}
	present := map[string]bool{}
	for _, ns := range namespaces.Items {
		if ns.DeletionTimestamp.IsZero() {
			present[ns.Name] = true
		}
	}
	imports, err := r.syncImports(ctx, s, mv, c, present)
	return errors.Join(err,
		r.syncEndpointSlices(ctx, s, mv, c, imports),
		r.syncExportConditions(ctx, s, mv, c),
		r.syncPeers(ctx, s, mv, c),
		r.syncTrust(ctx, s, mv, c))
}

// syncImports makes the member's ServiceImports match the aggregation and returns them by
// service. Namespaces the member lacks are skipped (meshfed never creates namespaces) and
// reported; the import appears once the namespace does.
func (r *Reconciler) syncImports(ctx context.Context, s *scope, mv *memberView, c client.Client, present map[string]bool) (map[mcs.ServiceKey]*mcsv1beta1.ServiceImport, error) {
	var existing mcsv1beta1.ServiceImportList
	if err := c.List(ctx, &existing, client.MatchingLabels{meshv1.LabelFederation: s.label}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	have := map[mcs.ServiceKey]*mcsv1beta1.ServiceImport{}
	for i := range existing.Items {
		si := &existing.Items[i]
		have[mcs.ServiceKey{Namespace: si.Namespace, Name: si.Name}] = si
	}
	out := map[mcs.ServiceKey]*mcsv1beta1.ServiceImport{}
	pending := map[string]bool{}
	var keys []mcs.ServiceKey
	for key := range s.agg.Imports {
		if present[key.Namespace] {
			keys = append(keys, key)
		} else {
			pending[key.Namespace] = true
		}
	}
	var mu sync.Mutex
	errs := []error{parallel(ctx, keys, func(ctx context.Context, key mcs.ServiceKey) error {
		want := mcs.ServiceImport(s.agg.Imports[key], s.label)
		if have[key] != nil {
			want.Status.Clusters = keepUnknown(want.Status.Clusters, have[key].Status.Clusters, s.unknown)
			// The member gives the import its ClusterSet IPs (operator/internal/controller/clustersetip).
			want.Spec.IPs = have[key].Spec.IPs
		}
		if tp, ok := s.policies[key]; ok {
			want.Annotations = maps.Clone(want.Annotations)
			if want.Annotations == nil {
				want.Annotations = map[string]string{}
			}
			want.Annotations[meshv1.AnnotationTrafficPolicy] = tp
		}
		si, err := ensureImport(ctx, c, mv.member, want, have[key])
		if err != nil {
			return fmt.Errorf("ServiceImport %s: %w", key, err)
		}
		mu.Lock()
		out[key] = si
		mu.Unlock()
		return nil
	})}
	mv.pendingNamespaces = slices.Sorted(maps.Keys(pending))
	mv.imported = int32(len(out))
	if !s.incomplete {
		for key, si := range have {
			if _, keep := s.agg.Imports[key]; !keep && !listsAny(si.Status.Clusters, s.unknown) {
				if err := c.Delete(ctx, si); client.IgnoreNotFound(err) != nil {
					errs = append(errs, fmt.Errorf("delete ServiceImport %s: %w", key, err))
				}
			}
		}
	}
	return out, errors.Join(errs...)
}

// keepUnknown adds to an import's clusters those of had that are unknown since the hub
// started: what the hub cannot see it does not take away.
func keepUnknown(clusters, had []mcsv1beta1.ClusterStatus, unknown map[string]bool) []mcsv1beta1.ClusterStatus {
	for _, c := range had {
		if unknown[c.Cluster] && !slices.ContainsFunc(clusters, func(w mcsv1beta1.ClusterStatus) bool { return w.Cluster == c.Cluster }) {
			clusters = append(clusters, c)
		}
	}
	slices.SortFunc(clusters, func(a, b mcsv1beta1.ClusterStatus) int { return strings.Compare(a.Cluster, b.Cluster) })
	return clusters
}

// listsAny tells whether any of the clusters is in set.
func listsAny(clusters []mcsv1beta1.ClusterStatus, set map[string]bool) bool {
	return slices.ContainsFunc(clusters, func(c mcsv1beta1.ClusterStatus) bool { return set[c.Cluster] })
}

// ensureImport creates or updates one ServiceImport. An object of that name that meshfed
// did not write is left alone and reported.
func ensureImport(ctx context.Context, c client.Client, m *clusters.Member, want, have *mcsv1beta1.ServiceImport) (*mcsv1beta1.ServiceImport, error) {
	if have == nil {
		err := c.Create(ctx, want)
		switch {
		case err == nil:
			have = want.DeepCopy()
			have.Status = mcsv1beta1.ServiceImportStatus{}
		case apierrors.IsAlreadyExists(err):
			// Our cache is behind, or someone else owns the name.
			have = &mcsv1beta1.ServiceImport{}
			if err := m.APIReader().Get(ctx, client.ObjectKeyFromObject(want), have); err != nil {
				return nil, err
			}
			if err := heldByOther(have, want, "so the federation can import the service"); err != nil {
				return nil, err
			}
		default:
			return nil, err
		}
	}
	if !maps.Equal(have.Labels, want.Labels) || !maps.Equal(have.Annotations, want.Annotations) ||
		!apiequality.Semantic.DeepEqual(have.Spec, want.Spec) {
		updated := have.DeepCopy()
		updated.Labels, updated.Annotations, updated.Spec = want.Labels, want.Annotations, want.Spec
		if err := c.Patch(ctx, updated, client.MergeFrom(have)); err != nil {
			return nil, err
		}
		have = updated
	}
	if !apiequality.Semantic.DeepEqual(have.Status.Clusters, want.Status.Clusters) {
		updated := have.DeepCopy()
		updated.Status.Clusters = want.Status.Clusters
		if err := c.Status().Patch(ctx, updated, client.MergeFrom(have)); err != nil {
			return nil, err
		}
		have = updated
	}
	return have, nil
}

// syncEndpointSlices mirrors the endpoints of every exporting member (the member itself
// included) of every import into the member, each slice owned by its ServiceImport so that
// garbage collection follows the import.
func (r *Reconciler) syncEndpointSlices(ctx context.Context, s *scope, mv *memberView, c client.Client, imports map[mcs.ServiceKey]*mcsv1beta1.ServiceImport) error {
	var existing discoveryv1.EndpointSliceList
	if err := c.List(ctx, &existing, client.MatchingLabels{meshv1.LabelFederation: s.label}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	have := map[client.ObjectKey]*discoveryv1.EndpointSlice{}
	for i := range existing.Items {
		have[client.ObjectKeyFromObject(&existing.Items[i])] = &existing.Items[i]
	}
	want := map[client.ObjectKey]bool{}
	var errs []error
	for key, si := range imports {
		for _, slice := range mcs.MirroredEndpointSlices(s.agg.Imports[key], s.sources, s.withdrawn, s.label) {
			slice.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: mcsv1beta1.GroupVersion.String(), Kind: "ServiceImport",
				Name: si.Name, UID: si.UID, BlockOwnerDeletion: ptr.To(false),
			}}
			k := client.ObjectKeyFromObject(&slice)
			want[k] = true
			if err := ensureSlice(ctx, c, mv.member.APIReader(), &slice, have[k]); err != nil {
				errs = append(errs, fmt.Errorf("EndpointSlice %s: %w", k, err))
			}
		}
	}
	for k, slice := range have {
		if want[k] {
			continue
		}
		// A withdrawn member's endpoints go even while another member is unknown.
		if s.incomplete && !s.withdrawn[slice.Labels[mcsv1beta1.LabelSourceCluster]] {
			continue
		}
		if err := c.Delete(ctx, slice); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete EndpointSlice %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

func ensureSlice(ctx context.Context, c client.Client, r client.Reader, want, have *discoveryv1.EndpointSlice) error {
	if have == nil {
		err := c.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			var taken discoveryv1.EndpointSlice
			if err := r.Get(ctx, client.ObjectKeyFromObject(want), &taken); err != nil {
				return err
			}
			return heldByOther(&taken, want, "so the federation can mirror the endpoints of cluster "+want.Labels[mcsv1beta1.LabelSourceCluster])
		}
		return err
	}
	if maps.Equal(have.Labels, want.Labels) && apiequality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		apiequality.Semantic.DeepEqual(have.Ports, want.Ports) && apiequality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	updated := have.DeepCopy()
	updated.Labels, updated.Endpoints, updated.Ports, updated.OwnerReferences = want.Labels, want.Endpoints, want.Ports, want.OwnerReferences
	return c.Patch(ctx, updated, client.MergeFrom(have))
}

// heldByOther is called when the name of an object meshfed creates is taken. When the
// holder carries this federation's label the cache is only behind (nil: the next pass
// updates it); otherwise another writer holds the name, and the error says what to delete.
func heldByOther(holder, want client.Object, purpose string) error {
	label := want.GetLabels()[meshv1.LabelFederation]
	switch other := holder.GetLabels()[meshv1.LabelFederation]; other {
	case label:
		return nil
	case "":
		return fmt.Errorf("the name is held by an object meshfed did not write: delete it %s", purpose)
	default:
		return fmt.Errorf("the name is held by federation %s: remove the member from one of the federations %s", other, purpose)
	}
}

// syncExportConditions sets Valid, Conflict and Ready on the member's own ServiceExports.
func (r *Reconciler) syncExportConditions(ctx context.Context, s *scope, mv *memberView, c client.Client) error {
	return parallel(ctx, mv.exports, func(ctx context.Context, ev exportView) error {
		updated := ev.obj.DeepCopy()
		for _, cond := range exportConditions(ev, s) {
			cond.ObservedGeneration = ev.obj.Generation
			meta.SetStatusCondition(&updated.Status.Conditions, cond)
		}
		if apiequality.Semantic.DeepEqual(updated.Status, ev.obj.Status) {
			return nil
		}
		if err := c.Status().Patch(ctx, updated, client.MergeFrom(ev.obj)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("status of ServiceExport %s: %w", ev.export.Key, err)
		}
		return nil
	})
}

// Writes to existing objects are merge patches computed against the cached copy: they
// carry no resourceVersion, so a cache that lags behind the hub's own last write does not
// turn into conflicts and retry backoff during a burst.

// writeConcurrency bounds the writes in flight to one member: a burst of exports becomes
// hundreds of writes, and one at a time leaves the member's API server idle between them.
const writeConcurrency = 16

// parallel runs fn for every item with at most writeConcurrency at once and joins the
// errors of all of them.
func parallel[T any](ctx context.Context, items []T, fn func(context.Context, T) error) error {
	var (
		mu   sync.Mutex
		errs []error
		g    errgroup.Group
	)
	g.SetLimit(writeConcurrency)
	for _, item := range items {
		g.Go(func() error {
			if err := fn(ctx, item); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// exportConditions are the MCS conditions of one export.
func exportConditions(ev exportView, s *scope) []metav1.Condition {
	v := mcs.Validate(ev.export, s.exportPolicy)
	if !v.Valid {
		return []metav1.Condition{
			{Type: string(mcsv1beta1.ServiceExportConditionValid), Status: metav1.ConditionFalse, Reason: string(v.Reason), Message: v.Message},
			{Type: string(mcsv1beta1.ServiceExportConditionReady), Status: metav1.ConditionFalse, Reason: string(mcsv1beta1.ServiceExportReasonFailed),
				Message: "not exported: " + v.Message},
			{Type: string(mcsv1beta1.ServiceExportConditionConflict), Status: metav1.ConditionFalse, Reason: string(mcsv1beta1.ServiceExportReasonNoConflicts),
				Message: "the export is not valid"},
		}
	}
	conflict := metav1.Condition{Type: string(mcsv1beta1.ServiceExportConditionConflict), Status: metav1.ConditionFalse,
		Reason: string(mcsv1beta1.ServiceExportReasonNoConflicts), Message: "all exports of the service agree"}
	if c := s.agg.Conflicts[ev.export.Key]; c.Reason != "" {
		conflict.Status, conflict.Reason, conflict.Message = metav1.ConditionTrue, string(c.Reason), c.Message
	}
	clusters := s.agg.Imports[ev.export.Key].Clusters
	return []metav1.Condition{
		{Type: string(mcsv1beta1.ServiceExportConditionValid), Status: metav1.ConditionTrue, Reason: string(v.Reason), Message: v.Message},
		{Type: string(mcsv1beta1.ServiceExportConditionReady), Status: metav1.ConditionTrue, Reason: string(mcsv1beta1.ServiceExportReasonExported),
			Message: fmt.Sprintf("imported into every member of federation %s; exported by %v", s.owner, clusters)},
		conflict,
	}
}

// syncPeers writes one MeshPeer per other member into the member.
func (r *Reconciler) syncPeers(ctx context.Context, s *scope, mv *memberView, c client.Client) error {
	var existing meshv1.MeshPeerList
	if err := c.List(ctx, &existing, client.MatchingLabels{meshv1.LabelFederation: s.label}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	have := map[string]*meshv1.MeshPeer{}
	for i := range existing.Items {
		have[existing.Items[i].Name] = &existing.Items[i]
	}
	var errs []error
	for _, other := range s.members {
		if other == mv {
			continue
		}
		want := peerFor(other, s.label)
		if !other.known && have[want.Name] != nil {
			// Nothing is known of the member since the hub started: what the peer says of
			// its network and gateway stays until the member answers.
			want.Spec = have[want.Name].Spec
		}
		if err := ensurePeer(ctx, c, mv.member.APIReader(), want, have[want.Name]); err != nil {
			errs = append(errs, fmt.Errorf("MeshPeer %s: %w", want.Name, err))
		}
		delete(have, want.Name)
	}
	for _, stale := range have {
		if err := c.Delete(ctx, stale); client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// peerFor describes member other to the rest of the federation.
func peerFor(other *memberView, label string) *meshv1.MeshPeer {
	p := &meshv1.MeshPeer{
		ObjectMeta: metav1.ObjectMeta{Name: other.spec.Name, Labels: mcs.OwnedLabels(label)},
		Spec:       meshv1.MeshPeerSpec{ClusterName: other.spec.Name},
	}
	if m := other.mesh; m != nil {
		p.Spec.Network = m.Spec.Network
		p.Spec.TrustDomain = m.Spec.TrustDomain
		p.Spec.Locality = m.Spec.Locality
		p.Spec.GatewayPort = m.Spec.EastWestGateway.Port
		p.Spec.GatewayAddress = m.Status.GatewayAddress
		if m.Spec.EastWestGateway.AdvertisedAddress != "" {
			p.Spec.GatewayAddress = m.Spec.EastWestGateway.AdvertisedAddress
		}
	}
	if other.spec.Locality != nil {
		p.Spec.Locality = *other.spec.Locality
	}
	cond := metav1.Condition{Type: meshv1.ConditionConnected, Status: metav1.ConditionTrue, Reason: meshv1.ReasonConnected,
		Message: "the hub reaches this member"}
	if !other.state.Connected {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonDisconnected, fmt.Sprintf("the hub does not reach this member: %v", other.err)
		if other.withdrawn {
			cond.Reason = meshv1.ReasonWithdrawn
			cond.Message += "; its endpoints were withdrawn after the grace period"
		}
	}
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	return p
}

func ensurePeer(ctx context.Context, c client.Client, r client.Reader, want, have *meshv1.MeshPeer) error {
	if have == nil {
		status := want.Status
		if err := c.Create(ctx, want); err != nil {
			if apierrors.IsAlreadyExists(err) {
				var taken meshv1.MeshPeer
				if err := r.Get(ctx, client.ObjectKeyFromObject(want), &taken); err != nil {
					return err
				}
				return heldByOther(&taken, want, "so this member learns of member "+want.Spec.ClusterName)
			}
			return err
		}
		want.Status = status
		return c.Status().Update(ctx, want)
	}
	if !maps.Equal(have.Labels, want.Labels) || have.Spec != want.Spec {
		updated := have.DeepCopy()
		updated.Labels, updated.Spec = want.Labels, want.Spec
		if err := c.Patch(ctx, updated, client.MergeFrom(have)); err != nil {
			return err
		}
		have = updated
	}
	updated := have.DeepCopy()
	for _, cond := range want.Status.Conditions {
		meta.SetStatusCondition(&updated.Status.Conditions, cond)
	}
	if apiequality.Semantic.DeepEqual(updated.Status, have.Status) {
		return nil
	}
	return c.Status().Patch(ctx, updated, client.MergeFrom(have))
}

// cleanupMember deletes everything the federation wrote into a member.
func cleanupMember(ctx context.Context, m *clusters.Member, label string) error {
	c := m.Client()
	sel := client.MatchingLabels{meshv1.LabelFederation: label}
	var errs []error
	var imports mcsv1beta1.ServiceImportList
	var eps discoveryv1.EndpointSliceList
	var peers meshv1.MeshPeerList
	for _, list := range []client.ObjectList{&imports, &eps, &peers} {
		if err := m.APIReader().List(ctx, list, sel); err != nil {
			errs = append(errs, err)
			continue
		}
		err := meta.EachListItem(list, func(o runtime.Object) error {
			obj := o.(client.Object)
			return client.IgnoreNotFound(c.Delete(ctx, obj))
		})
		errs = append(errs, err)
	}
	var public corev1.ConfigMap
	err := m.APIReader().Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: trust.IntermediateConfigMap}, &public)
	if err == nil && public.Labels[meshv1.LabelFederation] == label {
		errs = append(errs, client.IgnoreNotFound(c.Delete(ctx, &public)))
	} else if client.IgnoreNotFound(err) != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncTrust writes the member's meshfed-intermediate ConfigMap: its signed intermediate,
// the root and the trust bundle. The member's operator pairs them with its own key. A
// member without a usable intermediate keeps what it has.
func (r *Reconciler) syncTrust(ctx context.Context, s *scope, mv *memberView, c client.Client) error {
	ca := s.trust.cas[mv.spec.Name]
	if ca == nil {
		return nil
	}
	version := s.trust.bundle.Version()
	if rep := mv.reportedTrust(); rep.BundleVersion == version && rep.IntermediateFingerprint == trust.Fingerprint(ca.Chain[0]) {
		return nil // the member's operator reports holding exactly this
	}
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: mv.member.Namespace, Name: trust.IntermediateConfigMap, Labels: mcs.OwnedLabels(s.label),
			Annotations: map[string]string{meshv1.AnnotationTrustBundleVersion: version}},
		Data: trust.PublicData(ca, &s.trust.bundle),
	}
	var have corev1.ConfigMap
	err := mv.member.APIReader().Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Create(ctx, want); err != nil {
			return fmt.Errorf("create ConfigMap %s/%s: %w", want.Namespace, want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("read ConfigMap %s/%s: %w", want.Namespace, want.Name, err)
	case have.Labels[meshv1.LabelFederation] != s.label:
		return fmt.Errorf("ConfigMap %s/%s exists and this federation did not write it: delete it so the member gets its intermediate CA", want.Namespace, want.Name)
	case !maps.Equal(have.Data, want.Data) || have.Annotations[meshv1.AnnotationTrustBundleVersion] != version:
		have.Data, have.Annotations = want.Data, want.Annotations
		if err := c.Update(ctx, &have); err != nil {
			return fmt.Errorf("update ConfigMap %s/%s: %w", want.Namespace, want.Name, err)
		}
	}
	return nil
}
