package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

func TestCheckMesh(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Mesh)
		fields []string
	}{
		{"valid", func(*Mesh) {}, nil},
		{"gateway off may share the port", func(m *Mesh) {
			m.Spec.EastWestGateway.Enabled = ptr.To(false)
			m.Spec.EastWestGateway.Port = m.Spec.ControlPlane.XDSPort
		}, nil},
		{"shared port", func(m *Mesh) { m.Spec.EastWestGateway.Port = m.Spec.ControlPlane.XDSPort },
			[]string{"spec.eastWestGateway.port"}},
		{"debounce too short", func(m *Mesh) { m.Spec.ControlPlane.PushDebounce = &metav1.Duration{Duration: time.Microsecond} },
			[]string{"spec.controlPlane.pushDebounce"}},
		{"bad selector and bad debounce", func(m *Mesh) {
			m.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"a b": "c"}}
			m.Spec.ControlPlane.PushDebounce = &metav1.Duration{Duration: time.Hour}
		}, []string{"spec.injection.namespaceSelector", "spec.controlPlane.pushDebounce"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &Mesh{Spec: MeshSpec{ClusterName: "a", Network: "n",
				ControlPlane:    ControlPlaneSpec{XDSPort: 15010},
				EastWestGateway: GatewaySpec{Port: 15443}}}
			tc.change(m)
			wantFields(t, CheckMesh(m), tc.fields)
		})
	}
}

func TestCheckFederation(t *testing.T) {
	base := func() *MeshFederation {
		return &MeshFederation{Spec: MeshFederationSpec{
			Members: []Member{{Name: "a"}, {Name: "b"}},
			TrafficPolicies: []TrafficPolicy{{
				Service:  ServiceRef{Namespace: "shop", Name: "reviews"},
				Failover: []string{"b"},
				Weights:  []ClusterWeight{{Cluster: "a", Weight: 1}, {Cluster: "b", Weight: 3}},
			}},
		}}
	}
	cases := []struct {
		name   string
		change func(*MeshFederation)
		fields []string
	}{
		{"valid", func(*MeshFederation) {}, nil},
		{"failover to a stranger", func(f *MeshFederation) { f.Spec.TrafficPolicies[0].Failover = []string{"b", "c"} },
			[]string{"spec.trafficPolicies[0].failover[1]"}},
		{"weight for a stranger", func(f *MeshFederation) { f.Spec.TrafficPolicies[0].Weights[0].Cluster = "z" },
			[]string{"spec.trafficPolicies[0].weights[0].cluster"}},
		{"removed member still in a policy", func(f *MeshFederation) { f.Spec.Members = f.Spec.Members[:1] },
			[]string{"spec.trafficPolicies[0].failover[0]", "spec.trafficPolicies[0].weights[1].cluster"}},
		{"duplicate service", func(f *MeshFederation) {
			f.Spec.TrafficPolicies = append(f.Spec.TrafficPolicies, TrafficPolicy{Service: f.Spec.TrafficPolicies[0].Service})
		}, []string{"spec.trafficPolicies[1].service"}},
		{"renew before longer than the lifetime", func(f *MeshFederation) {
			f.Spec.Trust.IntermediateDuration = &metav1.Duration{Duration: time.Hour}
			f.Spec.Trust.IntermediateRenewBefore = &metav1.Duration{Duration: time.Hour}
		}, []string{"spec.trust.intermediateRenewBefore"}},
		{"a zero timeout", func(f *MeshFederation) { f.Spec.TrafficPolicies[0].Timeout = &metav1.Duration{} },
			[]string{"spec.trafficPolicies[0].timeout"}},
		{"a negative propagation delay", func(f *MeshFederation) {
			f.Spec.Trust.Rotation.PropagationDelay = &metav1.Duration{Duration: -time.Second}
		}, []string{"spec.trust.rotation.propagationDelay"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			tc.change(f)
			wantFields(t, CheckFederation(f), tc.fields)
		})
	}
}

// wantFields checks that errs are about exactly the given fields, in order.
func wantFields(t *testing.T, errs field.ErrorList, fields []string) {
	t.Helper()
	if len(errs) != len(fields) {
		t.Fatalf("errors %v, want on %v", errs, fields)
	}
	for i, f := range fields {
		if errs[i].Field != f {
			t.Errorf("error %d on %s, want %s", i, errs[i].Field, f)
		}
	}
}
