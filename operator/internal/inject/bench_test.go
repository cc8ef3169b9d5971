package inject_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/operator/internal/inject"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

// BenchmarkInjectedPodsAtOnce: 100 plain pods created at once in a meshed namespace; for
// each, the time from its creation to its agent being ready (a certificate from the CA
// service and a first configuration from the control plane), and the CA's signatures per
// second over the burst. One iteration is one burst.
func BenchmarkInjectedPodsAtOnce(b *testing.B) { burst(b, true) }

// BenchmarkPlainPodsAtOnce is the floor of BenchmarkInjectedPodsAtOnce: the same 100 pods
// at once, opted out of the mesh; for each, the time from its creation to Ready.
func BenchmarkPlainPodsAtOnce(b *testing.B) { burst(b, false) }

func burst(b *testing.B, meshed bool) {
	const pods = 100
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 1, Operator: true})
	testbed.RequireWorkloads(b, tb)
	ctx := context.Background()
	c := tb.Clusters[0]
	if _, err := sc.Federate(ctx, tb); err != nil {
		b.Fatal(err)
	}
	image, err := tb.Image(ctx, "workload", "./testbed/cmd/workload")
	if err != nil {
		b.Fatal(err)
	}
	opt := inject.Enabled
	if !meshed {
		opt = inject.Disabled
	}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: name, Labels: map[string]string{inject.LabelInject: opt}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{testbed.WorkloadContainer(image)}, TerminationGracePeriodSeconds: ptr.To[int64](0)}}
	}
	var took []time.Duration
	var rates []float64
	round := 0
	for b.Loop() {
		round++
		created := map[string]time.Time{}
		signedBefore := metricValue(ctx, c, "meshfed_ca_signed_total")
		start := time.Now()
		errs := make(chan error, pods)
		for i := range pods {
			name := fmt.Sprintf("burst-%d-%d", round, i)
			created[name] = time.Now()
			go func() { errs <- c.Client.Create(ctx, pod(name)) }()
		}
		for range pods {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		// The pods are listed every 50 ms: a pod's time is when it was first seen ready.
		ready := map[string]time.Time{}
		err := testbed.Poll(ctx, 5*time.Minute, "every agent ready", func() error {
			var list corev1.PodList
			if err := c.Client.List(ctx, &list, client.InNamespace(sc.Namespace)); err != nil {
				return err
			}
			now := time.Now()
			for i := range list.Items {
				p := &list.Items[i]
				if _, mine := created[p.Name]; mine && (meshed && agentReady(p) || !meshed && podReady(p)) {
					if _, seen := ready[p.Name]; !seen {
						ready[p.Name] = now
					}
				}
			}
			if len(ready) < pods {
				return fmt.Errorf("%d of %d agents ready", len(ready), pods)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		all := time.Since(start)
		for name, at := range ready {
			took = append(took, at.Sub(created[name]))
		}
		rates = append(rates, (metricValue(ctx, c, "meshfed_ca_signed_total")-signedBefore)/all.Seconds())
		b.Logf("round %d: %d pods ready in %s", round, pods, all.Round(time.Millisecond))
		b.StopTimer()
		for name := range created {
			_ = c.Client.Delete(ctx, pod(name))
		}
		b.StartTimer()
	}
	slices.Sort(took)
	what := "pod-ready"
	if meshed {
		what = "agent-ready"
		b.ReportMetric(slices.Min(rates), "ca-signatures-per-s")
	}
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), what+"-p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Milliseconds()), what+"-p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), what+"-max-ms")
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// agentReady tells whether the pod's agent has credentials and a first configuration.
func agentReady(p *corev1.Pod) bool {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == inject.AgentContainer {
			return s.Ready
		}
	}
	return false
}

// metricValue is a counter summed over the operator's replicas (0 when none has it).
func metricValue(ctx context.Context, c *testbed.Cluster, name string) float64 {
	v, _ := strconv.ParseFloat(c.OperatorMetric(ctx, name+" "), 64)
	return v
}
