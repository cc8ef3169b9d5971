package mcs

import (
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type svcOpt func(*corev1.Service)

func port(name string, n int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: name, Port: n})
	}
}
func headless(s *corev1.Service)         { s.Spec.ClusterIP = corev1.ClusterIPNone }
func clientIPAffinity(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }
func externalName(s *corev1.Service)     { s.Spec.Type = corev1.ServiceTypeExternalName }

func service(opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, SessionAffinity: corev1.ServiceAffinityNone}}
	for _, o := range opts {
		o(s)
	}
	return s
}

func export(cluster string, age time.Duration, svc *corev1.Service) Export {
	return Export{Cluster: cluster, Key: ServiceKey{"shop", "reviews"}, Created: t0.Add(-age), Service: svc}
}

func TestValidate(t *testing.T) {
	onlyPay := Policy{Federation: "meshfed-system/global", AllowedNamespaces: []string{"pay"}}
	tests := []struct {
		name   string
		export Export
		policy Policy
		want   mcsv1beta1.ServiceExportConditionReason
	}{
		{"an export of a ClusterIP Service is valid", export("a", 0, service(port("http", 80))), Policy{}, mcsv1beta1.ServiceExportReasonValid},
		{"an export of a headless Service is valid", export("a", 0, service(headless)), Policy{}, mcsv1beta1.ServiceExportReasonValid},
		{"an export without its Service is NoService", export("a", 0, nil), Policy{}, mcsv1beta1.ServiceExportReasonNoService},
		{"an export of an ExternalName Service is InvalidServiceType", export("a", 0, service(externalName)), Policy{}, mcsv1beta1.ServiceExportReasonInvalidServiceType},
		{"an export from a namespace the policy does not list is NamespaceNotAllowed", export("a", 0, service(port("http", 80))), onlyPay, ReasonNamespaceNotAllowed},
		{"an export from a namespace the policy lists is valid", export("a", 0, service(port("http", 80))),
			Policy{AllowedNamespaces: []string{"pay", "shop"}}, mcsv1beta1.ServiceExportReasonValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Validate(tc.export, tc.policy)
			if got.Reason != tc.want || got.Valid != (tc.want == mcsv1beta1.ServiceExportReasonValid) {
				t.Errorf("Validate = %+v, want reason %s", got, tc.want)
			}
			if !got.Valid && !strings.Contains(got.Message, "shop/reviews") {
				t.Errorf("message %q does not name the service", got.Message)
			}
		})
	}
}

func TestAggregate(t *testing.T) {
	tests := []struct {
		name         string
		exports      []Export
		wantType     mcsv1beta1.ServiceImportType
		wantPorts    []string // name:port
		wantClusters []string
		wantConflict mcsv1beta1.ServiceExportConditionReason
		wantAffinity corev1.ServiceAffinity
	}{
		{
			name:         "one export becomes a ClusterSetIP import with its ports",
			exports:      []Export{export("a", time.Hour, service(port("http", 80), port("grpc", 9090)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80", "grpc:9090"},
			wantClusters: []string{"a"},
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "identical exports from two clusters merge without conflict",
			exports:      []Export{export("b", time.Minute, service(port("http", 80))), export("a", time.Hour, service(port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "ports that differ are united, with a port conflict",
			exports:      []Export{export("a", time.Hour, service(port("http", 80))), export("b", time.Minute, service(port("http", 80), port("metrics", 9100)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80", "metrics:9100"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonPortConflict,
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "a port conflict keeps the oldest export's port",
			exports:      []Export{export("b", time.Minute, service(port("http", 8080))), export("a", time.Hour, service(port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonPortConflict,
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "ClusterIP exported first and headless later stays ClusterSetIP with a type conflict",
			exports:      []Export{export("a", time.Hour, service(port("http", 80))), export("b", time.Minute, service(headless, port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonTypeConflict,
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "headless exported first wins over a later ClusterIP export",
			exports:      []Export{export("a", time.Minute, service(port("http", 80))), export("b", time.Hour, service(headless, port("http", 80)))},
			wantType:     mcsv1beta1.Headless,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonTypeConflict,
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "a session affinity conflict keeps the oldest export's affinity",
			exports:      []Export{export("a", time.Hour, service(clientIPAffinity, port("http", 80))), export("b", time.Minute, service(port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonSessionAffinityConflict,
			wantAffinity: corev1.ServiceAffinityClientIP,
		},
		{
			name:         "equal creation times resolve by cluster name",
			exports:      []Export{export("b", 0, service(port("http", 8080))), export("a", 0, service(port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"a", "b"},
			wantConflict: mcsv1beta1.ServiceExportReasonPortConflict,
			wantAffinity: corev1.ServiceAffinityNone,
		},
		{
			name:         "an invalid export is left out of the import",
			exports:      []Export{export("a", time.Hour, nil), export("b", time.Minute, service(port("http", 80)))},
			wantType:     mcsv1beta1.ClusterSetIP,
			wantPorts:    []string{"http:80"},
			wantClusters: []string{"b"},
			wantAffinity: corev1.ServiceAffinityNone,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Aggregate(tc.exports, Policy{})
			imp := res.Imports[ServiceKey{"shop", "reviews"}]
			if imp == nil {
				t.Fatal("no import")
			}
			if imp.Type != tc.wantType {
				t.Errorf("type %s, want %s", imp.Type, tc.wantType)
			}
			var ports []string
			for _, p := range imp.Ports {
				ports = append(ports, p.Name+":"+strconv.Itoa(int(p.Port)))
			}
			if strings.Join(ports, ",") != strings.Join(tc.wantPorts, ",") {
				t.Errorf("ports %v, want %v", ports, tc.wantPorts)
			}
			if strings.Join(imp.Clusters, ",") != strings.Join(tc.wantClusters, ",") {
				t.Errorf("clusters %v, want %v", imp.Clusters, tc.wantClusters)
			}
			if imp.SessionAffinity != tc.wantAffinity {
				t.Errorf("affinity %s, want %s", imp.SessionAffinity, tc.wantAffinity)
			}
			c := res.Conflicts[ServiceKey{"shop", "reviews"}]
			if c.Reason != tc.wantConflict {
				t.Errorf("conflict %q (%s), want %q", c.Reason, c.Message, tc.wantConflict)
			}
			if c.Reason != "" && !strings.Contains(c.Message, "wins") {
				t.Errorf("conflict message %q does not say who wins", c.Message)
			}
		})
	}
}

// TestAggregateCarriesServiceFields: a ClusterSetIP import carries the IP families (IPv4
// when the Service names none), the internal traffic policy and the traffic distribution of
// the oldest export's Service; a headless import has no IP families.
func TestAggregateCarriesServiceFields(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	dual := func(s *corev1.Service) {
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		s.Spec.InternalTrafficPolicy = &local
		s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
	}
	imp := Aggregate([]Export{export("a", time.Hour, service(dual, port("http", 80))), export("b", 0, service(port("http", 80)))}, Policy{}).Imports[ServiceKey{"shop", "reviews"}]
	if strings.Join([]string{string(imp.IPFamilies[0]), string(imp.IPFamilies[1])}, ",") != "IPv6,IPv4" ||
		ptr.Deref(imp.InternalTrafficPolicy, "") != local || ptr.Deref(imp.TrafficDistribution, "") != corev1.ServiceTrafficDistributionPreferClose {
		t.Errorf("import %+v: want the oldest Service's families, policy and distribution", imp)
	}
	si := ServiceImport(imp, "meshfed-system.global")
	if len(si.Spec.IPFamilies) != 2 || si.Spec.InternalTrafficPolicy == nil || si.Spec.TrafficDistribution == nil {
		t.Errorf("ServiceImport spec %+v does not carry them", si.Spec)
	}
	plain := Aggregate([]Export{export("a", 0, service(port("http", 80)))}, Policy{}).Imports[ServiceKey{"shop", "reviews"}]
	if len(plain.IPFamilies) != 1 || plain.IPFamilies[0] != corev1.IPv4Protocol {
		t.Errorf("IP families %v, want [IPv4] for a Service naming none", plain.IPFamilies)
	}
	hl := Aggregate([]Export{export("a", 0, service(headless, dual, port("http", 80)))}, Policy{}).Imports[ServiceKey{"shop", "reviews"}]
	if len(hl.IPFamilies) != 0 {
		t.Errorf("headless import has IP families %v", hl.IPFamilies)
	}
}

func TestAggregateWithoutValidExportsHasNoImport(t *testing.T) {
	res := Aggregate([]Export{export("a", 0, nil), export("b", 0, service(externalName))}, Policy{})
	if len(res.Imports) != 0 {
		t.Errorf("imports %v, want none", res.Imports)
	}
	res = Aggregate([]Export{export("a", 0, service(port("http", 80)))}, Policy{AllowedNamespaces: []string{"pay"}})
	if len(res.Imports) != 0 {
		t.Errorf("imports %v, want none: the policy refuses namespace shop", res.Imports)
	}
}

func TestMirroredEndpointSlices(t *testing.T) {
	imp := &Import{Key: ServiceKey{"shop", "reviews"}, Clusters: []string{"a", "b", "c"}}
	slice := func(name, ip string, ready bool) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
				NodeName: ptr.To("node-of-" + name),
			}},
		}
	}
	sources := map[string]Source{
		"a": {Cluster: "a", Network: "net-1", Slices: map[ServiceKey][]discoveryv1.EndpointSlice{imp.Key: {slice("reviews-x", "198.18.1.10", true)}, {"shop", "other"}: {slice("other-a", "198.18.9.9", true)}}},
		"b": {Cluster: "b", Network: "net-2", Slices: map[ServiceKey][]discoveryv1.EndpointSlice{imp.Key: {slice("reviews-y", "198.18.2.10", false)}, {"shop", "other"}: {slice("other-b", "198.18.9.9", true)}}},
		"c": {Cluster: "c", Network: "net-2", Slices: map[ServiceKey][]discoveryv1.EndpointSlice{imp.Key: {slice("reviews-z", "198.18.3.10", true)}, {"shop", "other"}: {slice("other-c", "198.18.9.9", true)}}},
	}

	empty := slice("reviews-empty", "", true)
	empty.Endpoints = nil
	b := sources["b"]
	b.Slices[imp.Key] = append(b.Slices[imp.Key], empty)

	got := MirroredEndpointSlices(imp, sources, map[string]bool{"c": true}, "fed")
	if len(got) != 2 {
		t.Fatalf("%d slices, want 2 (a's, and b's non-empty one; c is withdrawn)", len(got))
	}
	if own := got[0]; own.Labels[mcsv1beta1.LabelSourceCluster] != "a" || own.Endpoints[0].Addresses[0] != "198.18.1.10" {
		t.Errorf("the first mirror is %v %v, want a's own endpoints (an exporting cluster imports too)", own.Labels, own.Endpoints)
	}
	s := got[1]
	if s.Labels[mcsv1beta1.LabelSourceCluster] != "b" || s.Labels[mcsv1beta1.LabelServiceName] != "reviews" ||
		s.Labels[discoveryv1.LabelManagedBy] != "meshfed.io" || s.Labels["meshfed.io/source-network"] != "net-2" {
		t.Errorf("labels %v", s.Labels)
	}
	if ep := s.Endpoints[0]; ep.Addresses[0] != "198.18.2.10" || *ep.Conditions.Ready || ep.NodeName != nil {
		t.Errorf("endpoint %+v: want b's address, its readiness, and no node of another cluster", ep)
	}
	if s.Name != MirrorSliceName("reviews", "b", "reviews-y") || len(s.Name) > 63 {
		t.Errorf("name %q", s.Name)
	}
	if MirrorSliceName("a-b", "c", "s") == MirrorSliceName("a", "b-c", "s") {
		t.Error("names of different sources collide")
	}
}
