package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

func validMesh() *meshv1.Mesh {
	return &meshv1.Mesh{
		ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec:       meshv1.MeshSpec{ClusterName: "east-1", Network: "net-a"},
	}
}

func validFederation(name string) *meshv1.MeshFederation {
	return &meshv1.MeshFederation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: meshv1.MeshFederationSpec{
			Members: []meshv1.Member{
				{Name: "east-1", KubeconfigSecretRef: meshv1.SecretKeyRef{Name: "east-1-kubeconfig"}},
				{Name: "west-1", KubeconfigSecretRef: meshv1.SecretKeyRef{Name: "west-1-kubeconfig"}},
			},
			Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned},
			TrafficPolicies: []meshv1.TrafficPolicy{{
				Service:  meshv1.ServiceRef{Namespace: "shop", Name: "reviews"},
				Failover: []string{"west-1"},
				Weights:  []meshv1.ClusterWeight{{Cluster: "east-1", Weight: 20}, {Cluster: "west-1", Weight: 80}},
			}},
		},
	}
}

// TestAPIServerValidation sends invalid objects to a real API server and checks that each
// is refused with a message that tells the user what to fix.
func TestAPIServerValidation(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0].Client
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("a valid Mesh is accepted and defaulted", func(t *testing.T) {
		m := validMesh()
		if err := c.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		if m.Spec.TrustDomain != "cluster.local" || m.Spec.ControlPlane.XDSPort != 15010 || m.Spec.EastWestGateway.Port != 15443 ||
			m.Spec.EastWestGateway.ServiceType != meshv1.GatewayServiceLoadBalancer || ptr.Deref(m.Spec.EastWestGateway.Replicas, 0) != 2 {
			t.Errorf("defaults not applied: %+v", m.Spec)
		}
		m.Spec.ClusterName = "renamed"
		err := c.Update(ctx, m)
		wantRejected(t, err, "clusterName is immutable")
		if err := c.Delete(ctx, m); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the samples in config/samples are accepted", func(t *testing.T) {
		for _, ns := range []string{"meshfed-system", "shop"} {
			if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
				t.Fatal(err)
			}
		}
		files, err := filepath.Glob("../../../config/samples/meshfed_*.yaml")
		if err != nil || len(files) == 0 {
			t.Fatalf("no samples found (%v)", err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var obj unstructured.Unstructured
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := c.Create(ctx, &obj); err != nil {
				t.Errorf("%s refused: %v", f, err)
			}
			if err := c.Delete(ctx, &obj); err != nil {
				t.Errorf("delete %s: %v", f, err)
			}
		}
	})

	meshCases := []struct {
		name   string
		mutate func(*meshv1.Mesh)
		want   string
	}{
		{"a second Mesh with another name is refused", func(m *meshv1.Mesh) { m.Name = "other" },
			"a cluster has one Mesh and it must be named 'default'"},
		{"a cluster name that is not a DNS label is refused", func(m *meshv1.Mesh) { m.Spec.ClusterName = "East_1" },
			"spec.clusterName: Invalid value"},
		{"the DNS-label message names the rule", func(m *meshv1.Mesh) { m.Spec.ClusterName = "-east" },
			"must be a DNS label"},
		{"a missing network is refused", func(m *meshv1.Mesh) { m.Spec.Network = "" },
			"spec.network"},
		{"an xDS port above 65535 is refused", func(m *meshv1.Mesh) { m.Spec.ControlPlane.XDSPort = 70000 },
			"spec.controlPlane.xdsPort: Invalid value: 70000: spec.controlPlane.xdsPort in body should be less than or equal to 65535"},
		{"an unknown gateway Service type is refused", func(m *meshv1.Mesh) { m.Spec.EastWestGateway.ServiceType = "Ingress" },
			`Unsupported value: "Ingress"`},
		{"negative gateway replicas are refused", func(m *meshv1.Mesh) { m.Spec.EastWestGateway.Replicas = ptr.To[int32](-1) },
			"spec.eastWestGateway.replicas in body should be greater than or equal to 0"},
		{"an advertised address that is neither IP nor DNS name is refused", func(m *meshv1.Mesh) { m.Spec.EastWestGateway.AdvertisedAddress = "gw at east" },
			"advertisedAddress must be an IP address or a DNS name"},
	}
	for _, tc := range meshCases {
		t.Run(tc.name, func(t *testing.T) {
			m := validMesh()
			tc.mutate(m)
			wantRejected(t, c.Create(ctx, m), tc.want)
		})
	}

	t.Run("a valid MeshFederation is accepted and defaulted", func(t *testing.T) {
		f := validFederation("valid")
		if err := c.Create(ctx, f); err != nil {
			t.Fatal(err)
		}
		if f.Spec.Members[0].KubeconfigSecretRef.Key != "kubeconfig" || f.Spec.Trust.IntermediateDuration.Duration != 720*time.Hour {
			t.Errorf("defaults not applied: %+v", f.Spec)
		}
	})

	fedCases := []struct {
		name   string
		mutate func(*meshv1.MeshFederation)
		want   string
	}{
		{"a federation without members is refused", func(f *meshv1.MeshFederation) { f.Spec.Members = nil },
			"spec.members"},
		{"a member listed twice is refused", func(f *meshv1.MeshFederation) { f.Spec.Members[1].Name = "east-1" },
			`spec.members[1]: Duplicate value`},
		{"a member name that is not a DNS label is refused", func(f *meshv1.MeshFederation) { f.Spec.Members[0].Name = "East.1" },
			"must be a DNS label"},
		{"both an issuer and bootstrap is refused", func(f *meshv1.MeshFederation) {
			f.Spec.Trust.IssuerRef = &meshv1.IssuerRef{Name: "corp-ca"}
		}, "set exactly one of trust.issuerRef"},
		{"neither an issuer nor bootstrap is refused", func(f *meshv1.MeshFederation) { f.Spec.Trust.Bootstrap = "" },
			"set exactly one of trust.issuerRef"},
		{"an issuer kind other than Issuer or ClusterIssuer is refused", func(f *meshv1.MeshFederation) {
			f.Spec.Trust = meshv1.TrustSpec{IssuerRef: &meshv1.IssuerRef{Name: "corp-ca", Kind: "Vault"}}
		}, `Unsupported value: "Vault"`},
		{"a negative weight is refused", func(f *meshv1.MeshFederation) { f.Spec.TrafficPolicies[0].Weights[0].Weight = -5 },
			"weight in body should be greater than or equal to 0"},
		{"weights that are all zero are refused", func(f *meshv1.MeshFederation) {
			f.Spec.TrafficPolicies[0].Weights = []meshv1.ClusterWeight{{Cluster: "east-1"}, {Cluster: "west-1"}}
		}, "at least one weight must be greater than 0"},
		{"weights naming a cluster twice are refused", func(f *meshv1.MeshFederation) { f.Spec.TrafficPolicies[0].Weights[1].Cluster = "east-1" },
			"spec.trafficPolicies[0].weights[1]: Duplicate value"},
		{"a failover order naming a cluster twice is refused", func(f *meshv1.MeshFederation) {
			f.Spec.TrafficPolicies[0].Failover = []string{"west-1", "east-1", "west-1"}
		}, `spec.trafficPolicies[0].failover[2]: Duplicate value: "west-1"`},
		{"a traffic policy that sets nothing is refused", func(f *meshv1.MeshFederation) {
			f.Spec.TrafficPolicies[0].Failover, f.Spec.TrafficPolicies[0].Weights = nil, nil
		}, "a traffic policy needs at least one of failover, weights, outlierDetection, timeout or retries"},
	}
	for i, tc := range fedCases {
		t.Run(tc.name, func(t *testing.T) {
			f := validFederation("invalid-" + string(rune('a'+i)))
			tc.mutate(f)
			wantRejected(t, c.Create(ctx, f), tc.want)
		})
	}

	policy := func(name string) *meshv1.ServicePolicy {
		return &meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: meshv1.ServicePolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Group: "", Kind: "Service", Name: "echo"}},
			Authorization: &meshv1.Authorization{Rules: []meshv1.AuthorizationRule{{Action: meshv1.ActionAllow,
				From:    []meshv1.Caller{{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/client"}, {Namespace: "shop"}, {TrustDomain: "partner.example"}},
				Methods: []string{"/grpc.testing.TestService/UnaryCall", "/grpc.testing.TestService/*"}}}}}}
	}
	t.Run("a ServicePolicy of traffic alone is accepted", func(t *testing.T) {
		p := policy("traffic-only")
		p.Spec.Authorization = nil
		p.Spec.Traffic = &meshv1.ServiceTraffic{Failover: []string{"west-1"}, CircuitBreaker: &meshv1.CircuitBreaker{MaxRequests: 10}}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a valid ServicePolicy is accepted", func(t *testing.T) {
		if err := c.Create(ctx, policy("valid")); err != nil {
			t.Fatal(err)
		}
	})
	policyCases := []struct {
		name   string
		mutate func(*meshv1.ServicePolicy)
		want   string
	}{
		{"a target that is neither a Service nor a ServiceImport is refused", func(p *meshv1.ServicePolicy) { p.Spec.TargetRefs[0].Kind = "Deployment" },
			"targetRefs name a Service"},
		{"a caller naming two things is refused", func(p *meshv1.ServicePolicy) {
			p.Spec.Authorization.Rules[0].From[0].Namespace = "shop"
		}, "set exactly one of spiffeID, namespace and trustDomain"},
		{"a method that is not a gRPC path is refused", func(p *meshv1.ServicePolicy) {
			p.Spec.Authorization.Rules[0].Methods = []string{"UnaryCall"}
		}, "a method is /<package>.<Service>/<Method>"},
		{"an unknown action is refused", func(p *meshv1.ServicePolicy) { p.Spec.Authorization.Rules[0].Action = "Audit" },
			`Unsupported value: "Audit"`},
		{"a policy that sets nothing is refused", func(p *meshv1.ServicePolicy) { p.Spec.Authorization = nil },
			"a ServicePolicy sets authorization, faultInjection or traffic"},
		{"a circuit breaker of 0 calls is refused", func(p *meshv1.ServicePolicy) {
			p.Spec.Traffic = &meshv1.ServiceTraffic{CircuitBreaker: &meshv1.CircuitBreaker{MaxRequests: 0}}
		}, "spec.traffic.circuitBreaker.maxRequests in body should be greater than or equal to 1"},
		{"weights that are all 0 are refused", func(p *meshv1.ServicePolicy) {
			p.Spec.Traffic = &meshv1.ServiceTraffic{Weights: []meshv1.ClusterWeight{{Cluster: "east-1"}, {Cluster: "west-1"}}}
		}, "at least one weight must be greater than 0"},
		{"fault injection without a fault is refused", func(p *meshv1.ServicePolicy) { p.Spec.FaultInjection = &meshv1.FaultInjection{} },
			"faultInjection sets delay or abort"},
		{"a fault percentage above 100 is refused", func(p *meshv1.ServicePolicy) {
			p.Spec.FaultInjection = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: 14, Percentage: 150}}
		}, "spec.faultInjection.abort.percentage in body should be less than or equal to 100"},
		{"a gRPC status outside 1–16 is refused", func(p *meshv1.ServicePolicy) {
			p.Spec.FaultInjection = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: 0, Percentage: 10}}
		}, "spec.faultInjection.abort.grpcStatus in body should be greater than or equal to 1"},
	}
	for i, tc := range policyCases {
		t.Run(tc.name, func(t *testing.T) {
			p := policy("invalid-" + string(rune('a'+i)))
			tc.mutate(p)
			wantRejected(t, c.Create(ctx, p), tc.want)
		})
	}
}

func wantRejected(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want refusal mentioning %q", want)
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("refused with %q\nwant it to mention %q", err, want)
	}
}
