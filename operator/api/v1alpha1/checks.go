package v1alpha1

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Bounds of Mesh.spec.controlPlane.pushDebounce: below a millisecond the control plane
// pushes on every event; above ten seconds proxies learn of failures too late.
const (
	minPushDebounce = time.Millisecond
	maxPushDebounce = 10 * time.Second
)

// CheckMesh returns what is wrong with a Mesh beyond its schema.
func CheckMesh(m *Mesh) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if sel := m.Spec.Injection.NamespaceSelector; sel != nil {
		if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
			errs = append(errs, field.Invalid(spec.Child("injection", "namespaceSelector"), sel,
				fmt.Sprintf("not a valid label selector (%v): use matchLabels, or matchExpressions with operator In, NotIn, Exists or DoesNotExist", err)))
		}
	}
	cp, gw := m.Spec.ControlPlane, m.Spec.EastWestGateway
	if cp.XDSPort != 0 && cp.XDSPort == gw.Port && (gw.Enabled == nil || *gw.Enabled) {
		errs = append(errs, field.Invalid(spec.Child("eastWestGateway", "port"), gw.Port,
			"the gateway and the xDS server cannot share a port: change controlPlane.xdsPort or eastWestGateway.port"))
	}
	if d := cp.PushDebounce; d != nil && (d.Duration < minPushDebounce || d.Duration > maxPushDebounce) {
		errs = append(errs, field.Invalid(spec.Child("controlPlane", "pushDebounce"), d.Duration.String(),
			fmt.Sprintf("must be between %s and %s", minPushDebounce, maxPushDebounce)))
	}
	return errs
}

// CheckFederation returns what is wrong with a MeshFederation beyond its schema: traffic
// policies must name members, one policy per service, and the trust durations must leave
// cert-manager time to renew.
func CheckFederation(f *MeshFederation) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	members := make([]string, 0, len(f.Spec.Members))
	for _, m := range f.Spec.Members {
		members = append(members, m.Name)
	}
	notMember := func(p *field.Path, name string) *field.Error {
		return field.NotFound(p, fmt.Sprintf("%s is not a member of this federation (members: %v): add it to spec.members or remove it from the policy", name, members))
	}
	seen := map[ServiceRef]int{}
	for i, tp := range f.Spec.TrafficPolicies {
		p := spec.Child("trafficPolicies").Index(i)
		if j, dup := seen[tp.Service]; dup {
			errs = append(errs, field.Duplicate(p.Child("service"),
				fmt.Sprintf("%s/%s already has trafficPolicies[%d]: merge the two policies", tp.Service.Namespace, tp.Service.Name, j)))
		}
		seen[tp.Service] = i
		for j, c := range tp.Failover {
			if !slices.Contains(members, c) {
				errs = append(errs, notMember(p.Child("failover").Index(j), c))
			}
		}
		for j, w := range tp.Weights {
			if !slices.Contains(members, w.Cluster) {
				errs = append(errs, notMember(p.Child("weights").Index(j).Child("cluster"), w.Cluster))
			}
		}
		if tp.Timeout != nil && tp.Timeout.Duration <= 0 {
			errs = append(errs, field.Invalid(p.Child("timeout"), tp.Timeout.Duration.String(), "must be positive: remove it to leave calls unbounded"))
		}
	}
	t := f.Spec.Trust
	if t.IntermediateDuration != nil && t.IntermediateRenewBefore != nil &&
		t.IntermediateRenewBefore.Duration >= t.IntermediateDuration.Duration {
		errs = append(errs, field.Invalid(spec.Child("trust", "intermediateRenewBefore"), t.IntermediateRenewBefore.Duration.String(),
			fmt.Sprintf("must be shorter than intermediateDuration (%s), or cert-manager renews the intermediates without pause", t.IntermediateDuration.Duration)))
	}
	if d := t.Rotation.PropagationDelay; d != nil && d.Duration < 0 {
		errs = append(errs, field.Invalid(spec.Child("trust", "rotation", "propagationDelay"), d.Duration.String(), "must not be negative"))
	}
	return errs
}
