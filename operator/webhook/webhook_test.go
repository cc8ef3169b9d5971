package webhook_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/webhook/webhooktest"
	"github.com/meshfed/meshfed/testbed"
)

const repoRoot = "../.."

func sample[T client.Object](t *testing.T, file string, obj T) T {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// warnings collects the API server's admission warnings.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// TestWebhooksOnAPIServer sends good and bad objects through a real API server that calls
// the webhooks, and checks each refusal names what to fix.
func TestWebhooksOnAPIServer(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	webhooktest.Serve(t, c, repoRoot)
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshfed-system"}})

	w := &warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandlerWithContext = w
	cl, err := client.New(cfg, client.Options{Scheme: testbed.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	mesh := sample(t, "meshfed_v1alpha1_mesh.yaml", &meshv1.Mesh{})
	fed := sample(t, "meshfed_v1alpha1_meshfederation.yaml", &meshv1.MeshFederation{})
	cases := []struct {
		name   string
		obj    client.Object
		errors []string
	}{
		{"sample Mesh", mesh.DeepCopy(), nil},
		{"sample MeshFederation", fed.DeepCopy(), nil},
		{"Mesh with a bad selector", func() client.Object {
			m := mesh.DeepCopy()
			m.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Near"}}}
			return m
		}(), []string{"spec.injection.namespaceSelector", "not a valid label selector", "operator In, NotIn, Exists or DoesNotExist"}},
		{"Mesh whose gateway takes the xDS port", func() client.Object {
			m := mesh.DeepCopy()
			m.Spec.ControlPlane.XDSPort, m.Spec.EastWestGateway.Port = 15443, 15443
			return m
		}(), []string{"spec.eastWestGateway.port", "cannot share a port"}},
		{"Mesh with a push debounce of a minute", func() client.Object {
			m := mesh.DeepCopy()
			m.Spec.ControlPlane.PushDebounce = &metav1.Duration{Duration: time.Minute}
			return m
		}(), []string{"spec.controlPlane.pushDebounce", "between 1ms and 10s"}},
		{"failover to a cluster that is not a member", func() client.Object {
			f := fed.DeepCopy()
			f.Spec.TrafficPolicies[0].Failover = []string{"north-1"}
			return f
		}(), []string{"spec.trafficPolicies[0].failover[0]", "north-1 is not a member", "add it to spec.members"}},
		{"weight for a cluster that is not a member", func() client.Object {
			f := fed.DeepCopy()
			f.Spec.TrafficPolicies[0].Weights[1].Cluster = "south-1"
			return f
		}(), []string{"spec.trafficPolicies[0].weights[1].cluster", "south-1 is not a member"}},
		{"two policies for one service", func() client.Object {
			f := fed.DeepCopy()
			f.Spec.TrafficPolicies = append(f.Spec.TrafficPolicies, f.Spec.TrafficPolicies[0])
			return f
		}(), []string{"spec.trafficPolicies[1].service", "already has trafficPolicies[0]", "merge the two"}},
		{"a MeshFederation outside the hub's namespace", func() client.Object {
			f := fed.DeepCopy()
			f.Namespace = "default"
			return f
		}(), []string{"metadata.namespace", "only in namespace meshfed-system", "--federation-namespace"}},
		{"intermediates renewed before they are issued", func() client.Object {
			f := fed.DeepCopy()
			f.Spec.Trust.IntermediateDuration = &metav1.Duration{Duration: 24 * time.Hour}
			f.Spec.Trust.IntermediateRenewBefore = &metav1.Duration{Duration: 48 * time.Hour}
			return f
		}(), []string{"spec.trust.intermediateRenewBefore", "shorter than intermediateDuration"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := cl.Create(ctx, tc.obj, client.DryRunAll)
			if len(tc.errors) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want Invalid, got %v", err)
			}
			for _, want := range tc.errors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err.Error(), want)
				}
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("missing kubeconfig Secrets and the deprecated trafficPolicies are warnings", func(t *testing.T) {
		w.mu.Lock()
		w.msgs = nil
		w.mu.Unlock()
		if err := cl.Create(ctx, fed.DeepCopy(), client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		joined := strings.Join(w.msgs, "\n")
		for _, want := range []string{"meshfed-system/east-1-kubeconfig does not exist", "meshfedctl join", "spec.trafficPolicies is deprecated", "ServicePolicy's traffic"} {
			if !strings.Contains(joined, want) {
				t.Errorf("warnings %q lack %q", joined, want)
			}
		}
	})

	t.Run("an update is checked too", func(t *testing.T) {
		m := mesh.DeepCopy()
		testbed.MustCreate(ctx, t, cl, m)
		m.Spec.EastWestGateway.Enabled = ptr.To(true)
		m.Spec.EastWestGateway.Port = m.Spec.ControlPlane.XDSPort
		if err := cl.Update(ctx, m); !apierrors.IsInvalid(err) {
			t.Fatalf("want Invalid, got %v", err)
		}
	})
}
