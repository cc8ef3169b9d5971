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

	"github.com/meshfed/meshfed/operator/internal/inject"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

// BenchmarkInjectedPodsAtOnce: 100 plain pods created at once in a meshed namespace; for
// each, the time from its creation to its agent being ready (a certificate from the CA
// service and a first configuration from the control plane), and the CA's signatures per
// second over the burst. One iteration is one burst.
func BenchmarkInjectedPodsAtOnce(b *testing.B) {
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
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{testbed.WorkloadContainer(image)}, TerminationGracePeriodSeconds: ptr.To[int64](0)}}
	}
	var took []time.Duration
	var rates []float64
	round := 0
	for b.Loop() {
		round++
		watch, err := c.Kube.CoreV1().Pods(sc.Namespace).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
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
		ready := map[string]time.Time{}
		deadline := time.After(5 * time.Minute)
		for len(ready) < pods {
			select {
			case ev, ok := <-watch.ResultChan():
				if !ok {
					b.Fatal("watch ended")
				}
				p, ok := ev.Object.(*corev1.Pod)
				if _, mine := created[p.GetName()]; !ok || !mine || !agentReady(p) {
					continue
				}
				if _, seen := ready[p.Name]; !seen {
					ready[p.Name] = time.Now()
				}
			case <-deadline:
				b.Fatalf("%d of %d agents ready after 5 min", len(ready), pods)
			}
		}
		all := time.Since(start)
		watch.Stop()
		for name, at := range ready {
			took = append(took, at.Sub(created[name]))
		}
		rates = append(rates, (metricValue(ctx, c, "meshfed_ca_signed_total")-signedBefore)/all.Seconds())
		b.Logf("round %d: %d agents ready in %s", round, pods, all.Round(time.Millisecond))
		b.StopTimer()
		for name := range created {
			_ = c.Client.Delete(ctx, pod(name))
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "agent-ready-p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Milliseconds()), "agent-ready-p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "agent-ready-max-ms")
	b.ReportMetric(slices.Min(rates), "ca-signatures-per-s")
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
