package mcs

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// ServiceKey names a service; by namespace sameness it is the same service in every cluster.
type ServiceKey struct {
	Namespace, Name string
}

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Export is one cluster's ServiceExport with the Service it exports.
type Export struct {
	Cluster string
	Key     ServiceKey
	// Created is the ServiceExport's creation time; the oldest export wins conflicts.
	Created time.Time
	// Service is the exported Service, nil when it does not exist.
	Service *corev1.Service
	// ExportedLabels and ExportedAnnotations come from the ServiceExport's spec.
	ExportedLabels      map[string]string
	ExportedAnnotations map[string]string
}

// Validity is the Valid condition of one export.
type Validity struct {
	Valid   bool
	Reason  mcsv1beta1.ServiceExportConditionReason
	Message string
}

// ReasonNamespaceNotAllowed marks an export from a namespace the federation's export policy
// does not list. (The MCS API names no reason for it.)
const ReasonNamespaceNotAllowed mcsv1beta1.ServiceExportConditionReason = "NamespaceNotAllowed"

// Policy is a federation's export policy.
type Policy struct {
	// Federation names the MeshFederation, for messages.
	Federation string
	// AllowedNamespaces may export services; empty allows every namespace.
	AllowedNamespaces []string
}

func (p Policy) allows(namespace string) bool {
	return len(p.AllowedNamespaces) == 0 || slices.Contains(p.AllowedNamespaces, namespace)
}

// Validate tells whether an export can be exported: its namespace must be allowed by the
// policy, its Service must exist and must not be of type ExternalName.
func Validate(e Export, p Policy) Validity {
	switch {
	case !p.allows(e.Key.Namespace):
		return Validity{Reason: ReasonNamespaceNotAllowed,
			Message: fmt.Sprintf("%s is not exported: namespace %s is not in spec.exportPolicy.allowedNamespaces of MeshFederation %s; "+
				"ask the federation's administrator to add it, or delete the ServiceExport", e.Key, e.Key.Namespace, p.Federation)}
	case e.Service == nil:
		return Validity{Reason: mcsv1beta1.ServiceExportReasonNoService,
			Message: fmt.Sprintf("Service %s does not exist in cluster %s: create it, or delete the ServiceExport", e.Key, e.Cluster)}
	case e.Service.Spec.Type == corev1.ServiceTypeExternalName:
		return Validity{Reason: mcsv1beta1.ServiceExportReasonInvalidServiceType,
			Message: fmt.Sprintf("Service %s is of type ExternalName, which cannot be exported: export a ClusterIP or headless Service", e.Key)}
	}
	return Validity{Valid: true, Reason: mcsv1beta1.ServiceExportReasonValid, Message: "the exported Service is valid"}
}

// Import is the aggregate of every valid export of one service.
type Import struct {
	Key                   ServiceKey
	Type                  mcsv1beta1.ServiceImportType
	Ports                 []mcsv1beta1.ServicePort
	SessionAffinity       corev1.ServiceAffinity
	SessionAffinityConfig *corev1.SessionAffinityConfig
	// IPFamilies of a ClusterSetIP import, as the oldest export's Service has them (IPv4
	// when it names none); each member gives the import an address of each.
	IPFamilies            []corev1.IPFamily
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy
	TrafficDistribution   *string
	Labels                map[string]string
	Annotations           map[string]string
	// Clusters export the service, sorted by name; conflicting exports still contribute
	// their endpoints, under the winning definition.
	Clusters []string
}

// Conflict is the Conflict condition shared by every export of one service. An empty
// Reason means no conflict.
type Conflict struct {
	Reason  mcsv1beta1.ServiceExportConditionReason
	Message string
}

// Result is the aggregation of all exports of a federation.
type Result struct {
	Imports   map[ServiceKey]*Import
	Conflicts map[ServiceKey]Conflict
}

// Aggregate merges the valid exports into one Import per service. Properties that cannot be
// merged are taken from the oldest export (creation time, then cluster name) and reported
// as a conflict on every export of the service. Invalid exports, those the policy refuses
// among them, are left out.
func Aggregate(exports []Export, p Policy) Result {
	byKey := map[ServiceKey][]Export{}
	for _, e := range exports {
		if Validate(e, p).Valid {
			byKey[e.Key] = append(byKey[e.Key], e)
		}
	}
	res := Result{Imports: map[ServiceKey]*Import{}, Conflicts: map[ServiceKey]Conflict{}}
	for key, es := range byKey {
		slices.SortFunc(es, func(a, b Export) int {
			if c := a.Created.Compare(b.Created); c != 0 {
				return c
			}
			return cmp.Compare(a.Cluster, b.Cluster)
		})
		imp, conflict := merge(key, es)
		res.Imports[key] = imp
		res.Conflicts[key] = conflict
	}
	return res
}

// conflictOrder ranks reasons: the condition names the first one found.
var conflictOrder = []mcsv1beta1.ServiceExportConditionReason{
	mcsv1beta1.ServiceExportReasonTypeConflict,
	mcsv1beta1.ServiceExportReasonPortConflict,
	mcsv1beta1.ServiceExportReasonSessionAffinityConflict,
	mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict,
	mcsv1beta1.ServiceExportReasonLabelsConflict,
	mcsv1beta1.ServiceExportReasonAnnotationsConflict,
}

// merge builds the Import of one service from its exports, oldest first.
func merge(key ServiceKey, es []Export) (*Import, Conflict) {
	oldest := es[0]
	imp := &Import{
		Key:                   key,
		Type:                  importType(oldest.Service),
		Ports:                 servicePorts(oldest.Service),
		SessionAffinity:       oldest.Service.Spec.SessionAffinity,
		SessionAffinityConfig: oldest.Service.Spec.SessionAffinityConfig.DeepCopy(),
		InternalTrafficPolicy: ptrCopy(oldest.Service.Spec.InternalTrafficPolicy),
		TrafficDistribution:   ptrCopy(oldest.Service.Spec.TrafficDistribution),
		Labels:                maps.Clone(oldest.ExportedLabels),
		Annotations:           maps.Clone(oldest.ExportedAnnotations),
	}
	if imp.Type == mcsv1beta1.ClusterSetIP {
		imp.IPFamilies = slices.Clone(oldest.Service.Spec.IPFamilies)
		if len(imp.IPFamilies) == 0 {
			imp.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
	}
	found := map[mcsv1beta1.ServiceExportConditionReason][]string{} // reason → details
	note := func(r mcsv1beta1.ServiceExportConditionReason, format string, args ...any) {
		found[r] = append(found[r], fmt.Sprintf(format, args...))
	}
	for _, e := range es {
		imp.Clusters = append(imp.Clusters, e.Cluster)
		if e.Cluster == oldest.Cluster {
			continue
		}
		if t := importType(e.Service); t != imp.Type {
			note(mcsv1beta1.ServiceExportReasonTypeConflict, "%s exports %s, %s exports %s", oldest.Cluster, imp.Type, e.Cluster, t)
		}
		clashed := false
		for _, p := range servicePorts(e.Service) {
			if msg, clash := mergePort(imp, p); clash {
				note(mcsv1beta1.ServiceExportReasonPortConflict, "%s: %s", e.Cluster, msg)
				clashed = true
			}
		}
		if !clashed && !samePorts(servicePorts(e.Service), servicePorts(oldest.Service)) {
			note(mcsv1beta1.ServiceExportReasonPortConflict, "%s exports ports %s, %s exports %s; the import has them all",
				oldest.Cluster, portList(oldest.Service), e.Cluster, portList(e.Service))
		}
		if e.Service.Spec.SessionAffinity != imp.SessionAffinity {
			note(mcsv1beta1.ServiceExportReasonSessionAffinityConflict, "%s uses %q, %s uses %q",
				oldest.Cluster, imp.SessionAffinity, e.Cluster, e.Service.Spec.SessionAffinity)
		} else if !apiequality.Semantic.DeepEqual(e.Service.Spec.SessionAffinityConfig, imp.SessionAffinityConfig) {
			note(mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict, "%s and %s differ in sessionAffinityConfig", oldest.Cluster, e.Cluster)
		}
		if !maps.Equal(e.ExportedLabels, imp.Labels) {
			note(mcsv1beta1.ServiceExportReasonLabelsConflict, "%s and %s export different labels", oldest.Cluster, e.Cluster)
		}
		if !maps.Equal(e.ExportedAnnotations, imp.Annotations) {
			note(mcsv1beta1.ServiceExportReasonAnnotationsConflict, "%s and %s export different annotations", oldest.Cluster, e.Cluster)
		}
	}
	slices.Sort(imp.Clusters)
	var conflict Conflict
	var parts []string
	for _, r := range conflictOrder {
		if details, ok := found[r]; ok {
			if conflict.Reason == "" {
				conflict.Reason = r
			}
			parts = append(parts, fmt.Sprintf("%s (%s)", r, strings.Join(details, "; ")))
		}
	}
	if conflict.Reason != "" {
		conflict.Message = fmt.Sprintf("exports of %s disagree; the oldest export, from %s, wins: %s",
			key, oldest.Cluster, strings.Join(parts, ", "))
	}
	return imp, conflict
}

// mergePort adds p to the import's ports unless it clashes with a port already there: the
// same name with another number or protocol, or the same number and protocol under
// another name. It returns a description of the clash.
func mergePort(imp *Import, p mcsv1beta1.ServicePort) (string, bool) {
	for _, have := range imp.Ports {
		sameName := have.Name == p.Name
		sameNumber := have.Port == p.Port && have.Protocol == p.Protocol
		switch {
		case sameName && sameNumber:
			return "", false
		case sameName:
			return fmt.Sprintf("port %q is %d/%s, the winner has %d/%s", p.Name, p.Port, p.Protocol, have.Port, have.Protocol), true
		case sameNumber:
			return fmt.Sprintf("port %d/%s is named %q, the winner names it %q", p.Port, p.Protocol, p.Name, have.Name), true
		}
	}
	imp.Ports = append(imp.Ports, p)
	return "", false
}

// samePorts tells whether two exports have the same ports, in any order.
func samePorts(a, b []mcsv1beta1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		if !slices.ContainsFunc(b, func(q mcsv1beta1.ServicePort) bool {
			return p.Name == q.Name && p.Port == q.Port && p.Protocol == q.Protocol
		}) {
			return false
		}
	}
	return true
}

// portList spells a Service's ports as [name:port/protocol ...].
func portList(svc *corev1.Service) string {
	var out []string
	for _, p := range servicePorts(svc) {
		out = append(out, fmt.Sprintf("%s:%d/%s", p.Name, p.Port, p.Protocol))
	}
	return "[" + strings.Join(out, " ") + "]"
}

func importType(svc *corev1.Service) mcsv1beta1.ServiceImportType {
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return mcsv1beta1.Headless
	}
	return mcsv1beta1.ClusterSetIP
}

func servicePorts(svc *corev1.Service) []mcsv1beta1.ServicePort {
	ports := make([]mcsv1beta1.ServicePort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		ports = append(ports, mcsv1beta1.ServicePort{Name: p.Name, Protocol: proto, AppProtocol: ptrCopy(p.AppProtocol), Port: p.Port})
	}
	return ports
}

// ptrCopy copies a pointed-to value: inputs may be shared cache objects.
func ptrCopy[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
