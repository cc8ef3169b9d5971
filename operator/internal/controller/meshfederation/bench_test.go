package meshfederation_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/testbed"
)

// importWatcher records when each ServiceImport first appears in each cluster, from watch
// events, so that latencies are measured without polling.
type importWatcher struct {
	mu    sync.Mutex
	seen  map[string]map[string]time.Time // name → cluster → first seen
	ready chan struct{}
}

func watchImports(b *testing.B, ctx context.Context, ns string, cs []*testbed.Cluster) *importWatcher {
	w := &importWatcher{seen: map[string]map[string]time.Time{}, ready: make(chan struct{}, 1)}
	for _, c := range cs {
		wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: testbed.Scheme})
		if err != nil {
			b.Fatal(err)
		}
		stream, err := wc.Watch(ctx, &mcsv1beta1.ServiceImportList{}, client.InNamespace(ns))
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for ev := range stream.ResultChan() {
				if ev.Type != watch.Added {
					continue
				}
				name := ev.Object.(client.Object).GetName()
				w.mu.Lock()
				if w.seen[name] == nil {
					w.seen[name] = map[string]time.Time{}
				}
				if _, ok := w.seen[name][c.Name]; !ok {
					w.seen[name][c.Name] = time.Now()
				}
				w.mu.Unlock()
				select {
				case w.ready <- struct{}{}:
				default:
				}
			}
		}()
	}
	return w
}

// complete returns when name is seen in n clusters, and the latest first-seen time.
func (w *importWatcher) wait(b *testing.B, names []string, n int, timeout time.Duration) time.Time {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		var last time.Time
		done := true
		for _, name := range names {
			if len(w.seen[name]) < n {
				done = false
				break
			}
			for _, t := range w.seen[name] {
				if t.After(last) {
					last = t
				}
			}
		}
		w.mu.Unlock()
		if done {
			return last
		}
		select {
		case <-w.ready:
		case <-deadline:
			b.Fatalf("imports not in %d clusters after %s", n, timeout)
		}
	}
}

func createServices(b *testing.B, ctx context.Context, c client.Client, ns string, names []string) {
	for _, name := range names {
		svc := clusterIPService(httpPort(80))
		svc.Namespace, svc.Name = ns, name
		if err := c.Create(ctx, svc); err != nil {
			b.Fatal(err)
		}
	}
}

// waitSettled waits until the cluster's EndpointSlice controller has written the slice of
// every new Service, so that its work does not overlap the measurement.
func waitSettled(b *testing.B, ctx context.Context, c *testbed.Cluster, ns string, n int) {
	testbed.Eventually(b, 3*time.Minute, "EndpointSlices of the new Services", func() error {
		var slices discoveryv1.EndpointSliceList
		if err := c.Client.List(ctx, &slices, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(slices.Items) < n {
			return fmt.Errorf("%d of %d", len(slices.Items), n)
		}
		return nil
	})
}

func exportObj(ns, name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// BenchmarkExportToImport measures, one export at a time, how long an export in cluster-1
// takes to appear as a ServiceImport in all three clusters (hub in cluster-1, least-privilege
// member access). Run with -benchtime 200x; it reports p50 and p99 in milliseconds.
func BenchmarkExportToImport(b *testing.B) {
	f := startFederation(b, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := "bench-latency"
	for _, c := range f.members {
		testbed.MustCreate(ctx, b, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	names := make([]string, b.N)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%d", i)
	}
	createServices(b, ctx, f.hub.Client, ns, names)
	waitSettled(b, ctx, f.hub, ns, len(names))
	w := watchImports(b, ctx, ns, f.members)
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, name := range names {
		start := time.Now()
		if err := f.hub.Client.Create(ctx, exportObj(ns, name)); err != nil {
			b.Fatal(err)
		}
		done := w.wait(b, []string{name}, len(f.members), 30*time.Second)
		latencies = append(latencies, done.Sub(start))
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(percentile(latencies, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(latencies, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkExportBurst creates 500 exports at once in cluster-1 (8 writers) and measures
// the time until every one is imported in all three clusters. Run with -benchtime 1x.
func BenchmarkExportBurst(b *testing.B) {
	const burst = 500
	f := startFederation(b, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var total time.Duration
	for iter := range b.N {
		ns := fmt.Sprintf("bench-burst-%d", iter)
		for _, c := range f.members {
			testbed.MustCreate(ctx, b, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		names := make([]string, burst)
		for i := range names {
			names[i] = fmt.Sprintf("svc-%d", i)
		}
		createServices(b, ctx, f.hub.Client, ns, names)
		waitSettled(b, ctx, f.hub, ns, len(names))
		w := watchImports(b, ctx, ns, f.members)
		b.ResetTimer()
		start := time.Now()
		work := make(chan string)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for name := range work {
					if err := f.hub.Client.Create(ctx, exportObj(ns, name)); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for _, name := range names {
			work <- name
		}
		close(work)
		wg.Wait()
		done := w.wait(b, names, len(f.members), 2*time.Minute)
		b.StopTimer()
		total += done.Sub(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-converge")
}
