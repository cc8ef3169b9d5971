package meshfederation_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshfed/meshfed/testbed"
)

// firstSeen records, from watch events, when each object first satisfies a condition in
// each cluster, so that latencies are measured without polling.
type firstSeen struct {
	mu    sync.Mutex
	seen  map[string]map[string]time.Time // name → cluster → first seen
	ready chan struct{}
}

// watchFirst watches list's kind in namespace ns of every cluster and records when each
// object first satisfies ok. A watch the API server ends (it may, under load) is resumed
// from a fresh list, so no object is missed.
func watchFirst(ctx context.Context, b *testing.B, ns string, cs []*testbed.Cluster, list client.ObjectList, ok func(client.Object) bool) *firstSeen {
	w := &firstSeen{seen: map[string]map[string]time.Time{}, ready: make(chan struct{}, 1)}
	for _, c := range cs {
		wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: testbed.Scheme})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for ctx.Err() == nil {
				l := list.DeepCopyObject().(client.ObjectList)
				if err := wc.List(ctx, l, client.InNamespace(ns)); err != nil {
					select { // retry after a pause, unless the benchmark is over
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				_ = meta.EachListItem(l, func(o runtime.Object) error {
					w.observe(c.Name, o.(client.Object), ok)
					return nil
				})
				stream, err := wc.Watch(ctx, list.DeepCopyObject().(client.ObjectList), client.InNamespace(ns),
					&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: l.GetResourceVersion()}})
				if err != nil {
					continue
				}
				for ev := range stream.ResultChan() {
					if ev.Type == watch.Error {
						break
					}
					if obj, isObj := ev.Object.(client.Object); isObj && ev.Type != watch.Deleted {
						w.observe(c.Name, obj, ok)
					}
				}
				stream.Stop()
			}
		}()
	}
	return w
}

func (w *firstSeen) observe(cluster string, obj client.Object, ok func(client.Object) bool) {
	if !ok(obj) {
		return
	}
	w.mu.Lock()
	if w.seen[obj.GetName()] == nil {
		w.seen[obj.GetName()] = map[string]time.Time{}
	}
	if _, seen := w.seen[obj.GetName()][cluster]; !seen {
		w.seen[obj.GetName()][cluster] = time.Now()
	}
	w.mu.Unlock()
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// watchImports records when each ServiceImport appears in each cluster.
func watchImports(ctx context.Context, b *testing.B, ns string, cs []*testbed.Cluster) *firstSeen {
	return watchFirst(ctx, b, ns, cs, &mcsv1beta1.ServiceImportList{}, func(client.Object) bool { return true })
}

// wait returns when every name is seen in n clusters, and the latest first-seen time.
func (w *firstSeen) wait(b *testing.B, names []string, n int, timeout time.Duration) time.Time {
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
			w.mu.Lock()
			var missing []string
			for _, name := range names {
				if len(w.seen[name]) < n {
					missing = append(missing, name)
				}
			}
			w.mu.Unlock()
			b.Fatalf("%d objects not seen in %d clusters after %s, e.g. %v", len(missing), n, timeout, missing[:min(5, len(missing))])
		}
	}
}

func createServices(ctx context.Context, b *testing.B, c client.Client, ns string, names []string) {
	for _, name := range names {
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Namespace, svc.Name = ns, name
		if err := c.Create(ctx, svc); err != nil {
			b.Fatal(err)
		}
	}
}

// waitSettled waits until the cluster's EndpointSlice controller has written the slice of
// every new Service, so that its work does not overlap the measurement.
func waitSettled(ctx context.Context, b *testing.B, c *testbed.Cluster, ns string, n int) {
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
	createServices(ctx, b, f.hub.Client, ns, names)
	waitSettled(ctx, b, f.hub, ns, len(names))
	w := watchImports(ctx, b, ns, f.members)
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, name := range names {
		start := time.Now()
		if err := f.hub.Client.Create(ctx, testbed.ServiceExport(ns, name)); err != nil {
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
// the time to full convergence: every ServiceImport in all three clusters with its
// status.clusters written, and every ServiceExport Ready. Run with -benchtime 1x.
func BenchmarkExportBurst(b *testing.B) {
	const burst = 500
	f := startFederation(b, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var total, totalCreated, totalImported, totalReady time.Duration
	for iter := range b.N {
		ns := fmt.Sprintf("bench-burst-%d", iter)
		for _, c := range f.members {
			testbed.MustCreate(ctx, b, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		names := make([]string, burst)
		for i := range names {
			names[i] = fmt.Sprintf("svc-%d", i)
		}
		createServices(ctx, b, f.hub.Client, ns, names)
		waitSettled(ctx, b, f.hub, ns, len(names))
		imports := watchFirst(ctx, b, ns, f.members, &mcsv1beta1.ServiceImportList{}, func(o client.Object) bool {
			return len(o.(*mcsv1beta1.ServiceImport).Status.Clusters) > 0
		})
		exports := watchFirst(ctx, b, ns, f.members[:1], &mcsv1beta1.ServiceExportList{}, func(o client.Object) bool {
			return meta.IsStatusConditionTrue(o.(*mcsv1beta1.ServiceExport).Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady))
		})
		before := apiRequests(ctx, b, f.members)
		cpuBefore, selfBefore := f.tb.CPUTime(), selfCPU()
		b.ResetTimer()
		start := time.Now()
		work := make(chan string)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for name := range work {
					if err := f.hub.Client.Create(ctx, testbed.ServiceExport(ns, name)); err != nil {
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
		created := time.Since(start)
		imported := imports.wait(b, names, len(f.members), 2*time.Minute)
		ready := exports.wait(b, names, 1, 2*time.Minute)
		b.StopTimer()
		logCPU(b, time.Since(start), cpuBefore, f.tb.CPUTime(), selfCPU()-selfBefore)
		after := apiRequests(ctx, b, f.members)
		for k, v := range after {
			if d := v - before[k]; d >= 50 {
				b.Logf("API requests during the burst: %-40s %6.0f", k, d)
			}
		}
		totalCreated += created
		totalImported += imported.Sub(start)
		totalReady += ready.Sub(start)
		total += max(imported.Sub(start), ready.Sub(start))
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-converge")
	b.ReportMetric(totalImported.Seconds()/float64(b.N), "s-imported")
	b.ReportMetric(totalReady.Seconds()/float64(b.N), "s-exports-ready")
	b.ReportMetric(totalCreated.Seconds()/float64(b.N), "s-created")
}

// logCPU logs the processor time each kind of testbed process (summed over the clusters)
// and the benchmark process itself used during a run of wall time.
func logCPU(b *testing.B, wall time.Duration, before, after map[string]time.Duration, self time.Duration) {
	byKind := map[string]time.Duration{}
	for name, t := range after {
		kind := name[strings.LastIndexByte(name, '/')+1:]
		if strings.Contains(name, "/pod/") {
			kind = "workloads"
		}
		byKind[kind] += t - before[name]
	}
	byKind["benchmark process (clients, watches)"] = self
	kinds := slices.Collect(maps.Keys(byKind))
	slices.SortFunc(kinds, func(x, y string) int { return cmp.Compare(byKind[y], byKind[x]) })
	var total time.Duration
	for _, k := range kinds {
		total += byKind[k]
		b.Logf("CPU during the burst: %-38s %6.2f s", k, byKind[k].Seconds())
	}
	b.Logf("CPU during the burst: %.2f s in all over %.2f s of wall time (%d processors)", total.Seconds(), wall.Seconds(), goruntime.NumCPU())
}

// selfCPU is the processor time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// apiRequests sums apiserver_request_total of the clusters' API servers by verb, resource
// and subresource.
func apiRequests(ctx context.Context, b *testing.B, cs []*testbed.Cluster) map[string]float64 {
	out := map[string]float64{}
	for _, c := range cs {
		kc, err := kubernetes.NewForConfig(c.Config)
		if err != nil {
			b.Fatal(err)
		}
		raw, err := kc.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			b.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range families["apiserver_request_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["verb"]+" "+labels["resource"]+" "+labels["subresource"]] += m.GetCounter().GetValue()
		}
	}
	return out
}
