package inject_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/operator/internal/inject"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOnboarding: plain pods in a namespace labelled for injection join the mesh on their
// own (the agent gets their identity from the member's CA service) and call each other
// with mutual SPIFFE authentication.
func TestOnboarding(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	testbed.RequireWorkloads(t, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := tb.Clusters[0]
	m, err := sc.Federate(ctx, tb)
	must(t, err)
	must(t, sc.EnableInjection(ctx, c))
	must(t, m.ExportEcho(ctx, c))
	_, err = m.RunInjected(ctx, c, "echo-0", "server", "echo", sc.EchoPort, map[string]string{"app": "echo"})
	must(t, err)
	cl, err := m.RunInjected(ctx, c, "client", "client", "client", sc.ClientPort, nil)
	must(t, err)

	t.Run("the webhook adds the agent as a native sidecar and leaves the app its own", func(t *testing.T) {
		var pod corev1.Pod
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: "echo-0"}, &pod))
		if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != inject.AgentContainer ||
			pod.Spec.InitContainers[0].RestartPolicy == nil || *pod.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("init containers %+v", pod.Spec.InitContainers)
		}
		if pod.Annotations[inject.AnnotationInjected] != inject.TemplateGRPCAgent {
			t.Errorf("annotations %v", pod.Annotations)
		}
	})

	t.Run("calls are mutually authenticated with the identities the agents got", func(t *testing.T) {
		must(t, sc.AllOn(ctx, cl, c.Name, 20, time.Minute))
		for _, call := range must1(t)(sc.Calls(ctx, cl, 10)) {
			if call.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || call.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("the client saw %q, the server saw %q", call.Peer, call.Caller)
			}
		}
	})
}

func must1(t testing.TB) func([]sc.Call, error) []sc.Call {
	return func(cs []sc.Call, err error) []sc.Call {
		t.Helper()
		must(t, err)
		return cs
	}
}
