package translate

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

func slice(name, service string, labels map[string]string, ready *bool, addrs ...string) discoveryv1.EndpointSlice {
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	s := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: l},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](8080)}, {Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}}}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ready}})
	}
	if service != "" && l[discoveryv1.LabelManagedBy] == "" {
		s.Labels[discoveryv1.LabelServiceName] = service
		s.Labels[discoveryv1.LabelManagedBy] = "endpointslice-controller.k8s.io"
	}
	return s
}

func TestBuildModel(t *testing.T) {
	remote := func(cluster, network string) map[string]string {
		return map[string]string{discoveryv1.LabelManagedBy: meshv1.EndpointSliceManager, mcsv1beta1.LabelServiceName: "reviews",
			mcsv1beta1.LabelSourceCluster: cluster, meshv1.LabelSourceNetwork: network}
	}
	in := Inputs{
		Mesh: &meshv1.Mesh{Spec: meshv1.MeshSpec{ClusterName: "a", Network: "net-1", Locality: meshv1.Locality{Region: "eu"}}},
		Services: []corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews", Annotations: map[string]string{meshv1.AnnotationServiceAccount: "reviews"}},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "external"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}},
		},
		Slices: []discoveryv1.EndpointSlice{
			slice("reviews-x", "reviews", nil, nil, "10.0.0.1"),
			slice("reviews-y", "reviews", nil, ptr.To(false), "10.0.0.2"),
			slice("imported-b", "", remote("b", "net-1"), ptr.To(true), "10.1.0.1"),
			slice("imported-c", "", remote("c", "net-2"), ptr.To(true), "10.2.0.1"),
			slice("mirror-of-self", "", remote("a", "net-1"), ptr.To(true), "10.0.0.9"),
			slice("orphan", "nothing", nil, nil, "10.0.0.7"),
		},
		Imports: []mcsv1beta1.ServiceImport{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews", Annotations: map[string]string{
				meshv1.AnnotationTrafficPolicy: `{"service":{"namespace":"shop","name":"reviews"},"failover":["c"],"weights":[{"cluster":"a","weight":1},{"cluster":"b","weight":0}],"timeout":"2s","retries":{"attempts":3}}`}},
				Spec: mcsv1beta1.ServiceImportSpec{IPs: []string{"243.0.0.7", "not-an-ip"}, Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "broken", Annotations: map[string]string{meshv1.AnnotationTrafficPolicy: "{not json"}},
				Spec: mcsv1beta1.ServiceImportSpec{Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080}}}},
		},
		Peers: []meshv1.MeshPeer{
			{Spec: meshv1.MeshPeerSpec{ClusterName: "c", Network: "net-2", GatewayAddress: "203.0.113.3", GatewayPort: 15443, Locality: meshv1.Locality{Region: "us"}}},
			{Spec: meshv1.MeshPeerSpec{ClusterName: "a", Network: "net-1"}},
		},
	}
	m, problems := BuildModel(in)
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "ServiceImport shop/broken") {
		t.Errorf("problems %v, want one naming ServiceImport shop/broken", problems)
	}
	if m.TrustDomain != meshv1.DefaultTrustDomain || !m.MTLS || m.Region != "eu" {
		t.Errorf("model %+v: want the default trust domain, mTLS on, region eu", m)
	}
	if _, self := m.Peers["a"]; self || m.Peers["c"].GatewayAddress != "203.0.113.3" {
		t.Errorf("peers %+v: want c with its gateway and not this cluster", m.Peers)
	}
	if len(m.Services) != 2 || m.Services[0].Name != "broken" || m.Services[1].Name != "reviews" {
		t.Fatalf("services %+v, want broken and reviews (the ExternalName left out)", m.Services)
	}
	r := m.Services[1]
	if !r.Local || !r.Imported || len(r.Ports) != 1 || len(r.ImportPorts) != 1 || r.ServiceAccount != "reviews" {
		t.Errorf("reviews %+v: want local and imported, TCP ports only, the pinned service account", r)
	}
	if len(r.ClusterSetIPs) != 1 || r.ClusterSetIPs[0] != "243.0.0.7" {
		t.Errorf("ClusterSet IPs %v, want the import's one valid address", r.ClusterSetIPs)
	}
	want := []string{"a/10.0.0.1/true", "a/10.0.0.2/false", "b/10.1.0.1/true", "c/10.2.0.1/true"}
	var got []string
	for _, e := range r.Endpoints {
		got = append(got, e.Cluster+"/"+e.Address+"/"+map[bool]string{true: "true", false: "false"}[e.Ready])
		if len(e.Ports) != 1 || e.Ports[0] != (Port{Name: "grpc", Port: 8080}) {
			t.Errorf("endpoint %+v: want only the TCP port", e)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("endpoints %v, want %v (a missing readiness is ready; a mirror of this cluster is ignored)", got, want)
	}
	if p := r.Policy; len(p.Failover) != 1 || len(p.Weights) != 1 || p.Timeout.Seconds() != 2 || p.Retry == nil || p.Retry.Attempts != 3 || p.Retry.On[0] != "unavailable" {
		t.Errorf("policy %+v: want failover c, the zero weight left out, 2 s timeout, 3 retries on unavailable", p)
	}
	if err := Check(Translate(m)); err != nil {
		t.Errorf("translation of the built model: %v", err)
	}
}

// TestAnEndpointSliceMeshfedMustNotTrustIsNotRouted: whoever may write an EndpointSlice
// in a namespace cannot point an exported service (and the gateway other networks reach)
// at an address of their choice: its slices not written by the EndpointSlice controller
// are left out, and so are local addresses outside the Nodes' pod networks, each reported.
func TestAnEndpointSliceMeshfedMustNotTrustIsNotRouted(t *testing.T) {
	forged := slice("reviews-forged", "", map[string]string{discoveryv1.LabelServiceName: "reviews", discoveryv1.LabelManagedBy: "someone"}, nil, "169.254.169.254")
	unlabelled := slice("reviews-bare", "", map[string]string{discoveryv1.LabelServiceName: "reviews"}, nil, "10.96.0.1")
	in := Inputs{
		Mesh: &meshv1.Mesh{Spec: meshv1.MeshSpec{ClusterName: "a", Network: "net-1"}},
		Services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}}}},
		Slices: []discoveryv1.EndpointSlice{
			slice("reviews-x", "reviews", nil, nil, "198.18.1.130", "169.254.169.254"),
			forged, unlabelled,
		},
		Imports: []mcsv1beta1.ServiceImport{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
			Spec:   mcsv1beta1.ServiceImportSpec{Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080}}},
			Status: mcsv1beta1.ServiceImportStatus{Clusters: []mcsv1beta1.ClusterStatus{{Cluster: "a"}}}}},
		PodNetworks: []netip.Prefix{netip.MustParsePrefix("198.18.1.128/25")},
	}
	m, problems := BuildModel(in)
	var addrs []string
	for _, ep := range m.Services[0].Endpoints {
		addrs = append(addrs, ep.Address)
	}
	if strings.Join(addrs, ",") != "198.18.1.130" {
		t.Errorf("endpoints %v, want only the pod's address", addrs)
	}
	all := errors.Join(problems...).Error()
	for _, want := range []string{"shop/reviews-forged (managed by \"someone\")", "shop/reviews-bare", "169.254.169.254 in shop/reviews-x"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems %q do not name %s", all, want)
		}
	}

	in.PodNetworks = nil // unknown (no Node has a podCIDR): not checked
	m, _ = BuildModel(in)
	if len(m.Services[0].Endpoints) != 2 {
		t.Errorf("without known pod networks: %d endpoints, want both of the controller's slice", len(m.Services[0].Endpoints))
	}

	// A service this cluster does not export (the API server's default/kubernetes, say)
	// is not reachable from other clusters: its slices are taken as they are.
	in.Imports, in.PodNetworks = nil, []netip.Prefix{netip.MustParsePrefix("198.18.1.128/25")}
	m, problems = BuildModel(in)
	if n := len(m.Services[0].Endpoints); n != 4 || len(problems) != 0 {
		t.Errorf("a service not exported: %d endpoints (want all 4), problems %v", n, problems)
	}
}

// TestServicePoliciesBecomeAuthorization: the rules of every ServicePolicy targeting a
// service (by its Service or its ServiceImport) are its authorization, callers named by
// SPIFFE ID, namespace (in the mesh's trust domain) or trust domain, methods exactly or by
// service; a policy of another namespace or for another service does not apply.
func TestServicePoliciesBecomeAuthorization(t *testing.T) {
	mesh := &meshv1.Mesh{Spec: meshv1.MeshSpec{ClusterName: "a", Network: "net-1", TrustDomain: "example.org"}}
	svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}}}
	other := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: svc.Spec}
	policy := func(ns, name, target string, rules ...meshv1.AuthorizationRule) meshv1.ServicePolicy {
		return meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1.ServicePolicySpec{
			TargetRefs:    []meshv1.PolicyTargetReference{{Group: mcsv1beta1.GroupName, Kind: "ServiceImport", Name: target}},
			Authorization: &meshv1.Authorization{Rules: rules}}}
	}
	m, problems := BuildModel(Inputs{Mesh: mesh, Services: []corev1.Service{svc, other}, Policies: []meshv1.ServicePolicy{
		policy("shop", "frontend-only", "reviews",
			meshv1.AuthorizationRule{Action: meshv1.ActionAllow, From: []meshv1.Caller{{SPIFFEID: "spiffe://example.org/ns/shop/sa/frontend"}, {TrustDomain: "partner.example"}},
				Methods: []string{"/shop.Reviews/Get", "/shop.ReviewsAdmin/*"}}),
		policy("shop", "no-attic", "reviews", meshv1.AuthorizationRule{Action: meshv1.ActionDeny, From: []meshv1.Caller{{Namespace: "attic"}}}),
		policy("elsewhere", "not-here", "reviews", meshv1.AuthorizationRule{Action: meshv1.ActionDeny}),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "b-later"}, Spec: meshv1.ServicePolicySpec{
			TargetRefs:     []meshv1.PolicyTargetReference{{Kind: "Service", Name: "cart"}},
			FaultInjection: &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: 13, Percentage: 50}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a-first"}, Spec: meshv1.ServicePolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Kind: "Service", Name: "cart"}},
			FaultInjection: &meshv1.FaultInjection{Delay: &meshv1.FaultDelay{FixedDelay: metav1.Duration{Duration: time.Second}, Percentage: 5},
				Abort: &meshv1.FaultAbort{GRPCStatus: 14, Percentage: 20}}}},
	}})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	want := &Authz{
		Deny: []AuthzRule{{Name: "shop/no-attic/0", Principals: []Principal{{Prefix: "spiffe://example.org/ns/attic/sa/"}}}},
		Allow: []AuthzRule{{Name: "shop/frontend-only/0", Principals: []Principal{{Exact: "spiffe://example.org/ns/shop/sa/frontend"}, {Prefix: "spiffe://partner.example/"}},
			Methods: []string{"/shop.Reviews/Get", "/shop.ReviewsAdmin/"}}},
	}
	for _, s := range m.Services {
		switch s.Name {
		case "reviews":
			if !reflect.DeepEqual(s.Authz, want) {
				t.Errorf("reviews: authorization %+v, want %+v", s.Authz, want)
			}
		case "cart":
			if s.Authz != nil {
				t.Errorf("cart: authorization %+v from a policy of another service", s.Authz)
			}
			// Of two policies injecting faults, the first by name wins.
			if want := (&Fault{Delay: time.Second, DelayPercent: 5, AbortCode: 14, AbortPercent: 20}); !reflect.DeepEqual(s.Fault, want) {
				t.Errorf("cart: fault %+v, want %+v", s.Fault, want)
			}
		}
	}
}

// TestServicePolicyTrafficReplacesTheFederations: a ServicePolicy's traffic takes the place
// of the federation's traffic policy (the import's annotation) for its service in this
// cluster, whole: fields it leaves out are not taken from the federation's; a service no
// policy's traffic targets keeps the federation's.
func TestServicePolicyTrafficReplacesTheFederations(t *testing.T) {
	mesh := &meshv1.Mesh{Spec: meshv1.MeshSpec{ClusterName: "a", Network: "net-1"}}
	federation := `{"service":{"name":"x","namespace":"shop"},"failover":["c","b"],"timeout":"2s"}`
	imp := func(name string) mcsv1beta1.ServiceImport {
		return mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: map[string]string{meshv1.AnnotationTrafficPolicy: federation}},
			Spec: mcsv1beta1.ServiceImportSpec{Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080}}}}
	}
	pending := int32(7)
	m, problems := BuildModel(Inputs{Mesh: mesh, Imports: []mcsv1beta1.ServiceImport{imp("reviews"), imp("cart")}, Policies: []meshv1.ServicePolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews-traffic"}, Spec: meshv1.ServicePolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Group: mcsv1beta1.GroupName, Kind: "ServiceImport", Name: "reviews"}},
			Traffic: &meshv1.ServiceTraffic{Failover: []string{"b"}, Weights: []meshv1.ClusterWeight{{Cluster: "a", Weight: 0}, {Cluster: "b", Weight: 3}},
				CircuitBreaker: &meshv1.CircuitBreaker{MaxRequests: 5, MaxPendingRequests: &pending}}}},
	}})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	for _, s := range m.Services {
		switch s.Name {
		case "reviews":
			want := Policy{Failover: []string{"b"}, Weights: []Weight{{Cluster: "b", Weight: 3}}, CircuitBreaker: &CircuitBreaker{MaxRequests: 5, MaxPending: 7}}
			if !reflect.DeepEqual(s.Policy, want) {
				t.Errorf("reviews: policy %+v, want %+v", s.Policy, want)
			}
		case "cart":
			if want := (Policy{Failover: []string{"c", "b"}, Timeout: 2 * time.Second}); !reflect.DeepEqual(s.Policy, want) {
				t.Errorf("cart: policy %+v, want the federation's %+v", s.Policy, want)
			}
		}
	}
}
