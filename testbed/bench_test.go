package testbed_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

// BenchmarkStart3Clusters measures how long 3 clusters take to be up with meshfed
// installed from config/default (the operator's Deployment available and a replica
// leading, its webhooks registered), warm (binaries and images built, images not yet
// pulled by the nodes), and the memory of an idle cluster with everything it runs, pods
// included. Run it with `make bench` or
// `go test -run '^$' -bench Start3 -benchtime 3x ./testbed` (root: meshfed runs as pods).
func BenchmarkStart3Clusters(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip(testbed.ErrNeedsRoot.Error())
	}
	var rss, podRSS, pods int64
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		tb, err := testbed.Start(ctx, testbed.Options{Clusters: 3, Operator: true})
		cancel()
		if err != nil {
			if tb != nil {
				tb.Stop()
			}
			b.Fatal(err)
		}
		b.StopTimer()
		rss, podRSS, pods = 0, 0, 0
		for _, pid := range tb.PIDs() {
			rss += treeResidentBytes(pid)
		}
		for _, pid := range tb.PodPIDs() {
			podRSS += residentBytes(pid)
			pods++
		}
		tb.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(rss)/3/(1<<20), "MiB-rss/cluster")
	if pods > 0 {
		b.ReportMetric(float64(podRSS)/float64(pods)/(1<<20), "MiB-rss/container")
	}
}

// residentBytes reads a process's resident set size from /proc.
func residentBytes(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkServiceImportWrites measures what one API server of the testbed spends on the
// two writes every imported service costs in every member (a ServiceImport create, then
// its status, a subresource the create leaves out), with nothing else running: one cluster,
// no operator, 500 of each per iteration from 8 writers, as the hub writes them. It is the
// floor under the hub's burst benchmark, which needs 1,500 of each besides the exports'.
// `go test -run '^$' -bench ServiceImportWrites -benchtime 3x ./testbed`
func BenchmarkServiceImportWrites(b *testing.B) {
	const n = 500
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := context.Background()
	var createCPU, statusCPU, createWall, statusWall time.Duration
	iter := 0
	for b.Loop() {
		ns := fmt.Sprintf("writes-%d", iter)
		iter++
		testbed.MustCreate(ctx, b, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		sis := make([]*mcsv1beta1.ServiceImport, n)
		for i := range sis {
			sis[i] = serviceImport(ns, fmt.Sprintf("svc-%d", i))
		}
		cpu, wall := apiServerWrites(b, tb, sis, func(si *mcsv1beta1.ServiceImport) error { return c.Client.Create(ctx, si) })
		createCPU, createWall = createCPU+cpu, createWall+wall
		cpu, wall = apiServerWrites(b, tb, sis, func(si *mcsv1beta1.ServiceImport) error {
			have := si.DeepCopy()
			si.Status.Clusters = []mcsv1beta1.ClusterStatus{{Cluster: "cluster-1"}, {Cluster: "cluster-2"}, {Cluster: "cluster-3"}}
			return c.Client.Status().Patch(ctx, si, client.MergeFrom(have))
		})
		statusCPU, statusWall = statusCPU+cpu, statusWall+wall
	}
	writes := float64(n * iter)
	b.ReportMetric(float64(createCPU.Microseconds())/1e3/writes, "apiserver-cpu-ms/create")
	b.ReportMetric(float64(statusCPU.Microseconds())/1e3/writes, "apiserver-cpu-ms/status")
	b.ReportMetric(writes/createWall.Seconds(), "creates/s")
	b.ReportMetric(writes/statusWall.Seconds(), "status-writes/s")
}

// apiServerWrites makes one write per object from 8 goroutines and returns the processor
// time the API server used meanwhile and the wall time it took.
func apiServerWrites(b *testing.B, tb *testbed.Testbed, sis []*mcsv1beta1.ServiceImport, write func(*mcsv1beta1.ServiceImport) error) (cpu, wall time.Duration) {
	b.Helper()
	apiServerCPU := func() time.Duration {
		var d time.Duration
		for name, t := range tb.CPUTime() {
			if strings.HasSuffix(name, "/kube-apiserver") {
				d += t
			}
		}
		return d
	}
	before, start := apiServerCPU(), time.Now()
	inParallel(b, 8, sis, write)
	return apiServerCPU() - before, time.Since(start)
}

// inParallel calls f for every item from a number of goroutines and waits for them.
func inParallel[T any](b *testing.B, goroutines int, items []T, f func(T) error) {
	work := make(chan T)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for item := range work {
				if err := f(item); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for _, item := range items {
		work <- item
	}
	close(work)
	wg.Wait()
}

// serviceImport is a ServiceImport as the hub writes it, without its status.
func serviceImport(ns, name string) *mcsv1beta1.ServiceImport {
	return &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelFederation: "meshfed-system.global"}},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP,
			Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080, Protocol: corev1.ProtocolTCP}}},
	}
}

// BenchmarkBurstFloor makes, with no operator anywhere, exactly the writes the hub's burst
// benchmark needs for 500 exports in cluster-1 of three clusters: per export its create and
// its status, and in each cluster a ServiceImport create and its status, each export's
// writes in order, 24 exports at a time. No hub can converge faster than this: it has the
// same writes to make, and watches and decisions of its own besides.
// `go test -run '^$' -bench BurstFloor -benchtime 1x ./testbed`
func BenchmarkBurstFloor(b *testing.B) {
	const burst, inFlight = 500, 24
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 3})
	ctx := context.Background()
	var wall time.Duration
	iter := 0
	for b.Loop() {
		ns := fmt.Sprintf("floor-%d", iter)
		iter++
		for _, c := range tb.Clusters {
			testbed.MustCreate(ctx, b, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		clusters := []mcsv1beta1.ClusterStatus{{Cluster: "cluster-1"}}
		names := make([]string, burst)
		for i := range names {
			names[i] = fmt.Sprintf("svc-%d", i)
		}
		cpuBefore, start := tb.CPUTime(), time.Now()
		inParallel(b, inFlight, names, func(name string) error { return floorWrites(ctx, tb, ns, name, clusters) })
		wall += time.Since(start)
		byKind := map[string]time.Duration{}
		for name, t := range tb.CPUTime() {
			byKind[name[strings.LastIndexByte(name, '/')+1:]] += t - cpuBefore[name]
		}
		b.Logf("CPU during the writes (%.2f s of wall time): %v", time.Since(start).Seconds(), byKind)
	}
	b.ReportMetric(wall.Seconds()/float64(iter), "s-to-converge")
}

// floorWrites makes the writes of one export: its create and status in the first cluster,
// then a ServiceImport and its status in every cluster.
func floorWrites(ctx context.Context, tb *testbed.Testbed, ns, name string, clusters []mcsv1beta1.ClusterStatus) error {
	hub := tb.Clusters[0].Client
	se := testbed.ServiceExport(ns, name)
	if err := hub.Create(ctx, se); err != nil {
		return err
	}
	have := se.DeepCopy()
	now := metav1.Now()
	se.Status.Conditions = []metav1.Condition{
		{Type: string(mcsv1beta1.ServiceExportConditionValid), Status: metav1.ConditionTrue, Reason: "Valid", LastTransitionTime: now},
		{Type: string(mcsv1beta1.ServiceExportConditionReady), Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: now},
	}
	if err := hub.Status().Patch(ctx, se, client.MergeFrom(have)); err != nil {
		return err
	}
	for _, c := range tb.Clusters {
		si := serviceImport(ns, name)
		if err := c.Client.Create(ctx, si); err != nil {
			return err
		}
		have := si.DeepCopy()
		si.Status.Clusters = clusters
		if err := c.Client.Status().Patch(ctx, si, client.MergeFrom(have)); err != nil {
			return err
		}
	}
	return nil
}

// treeResidentBytes is the resident memory of pid and every process under it (a node's
// containers are its children).
func treeResidentBytes(pid int) int64 {
	total := residentBytes(pid)
	for _, child := range testbed.ChildPIDs(pid) {
		total += treeResidentBytes(child)
	}
	return total
}

// BenchmarkPodStartup measures, on one cluster of the testbed, how long a pod takes from
// its creation through the API to phase Running when its image is already unpacked on the
// node (the scheduler, the node's sandbox, volumes and process start), and the memory
// each pod adds. `go test -run '^$' -bench PodStartup -benchtime 50x ./testbed`
func BenchmarkPodStartup(b *testing.B) {
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 1, Pods: true})
	if !testbed.CanRunPods(tb) {
		b.Skip(testbed.ErrNeedsRoot.Error())
	}
	c := tb.Clusters[0]
	ctx := context.Background()
	image, err := tb.Image(ctx, "workload", "./testbed/cmd/workload")
	if err != nil {
		b.Fatal(err)
	}
	testbed.MustCreate(ctx, b, c.Client, testbed.Namespace("startup"))
	testbed.Eventually(b, 30*time.Second, "default ServiceAccount", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "startup", Name: "default"}, &corev1.ServiceAccount{})
	})
	watch, err := c.Kube.CoreV1().Pods("startup").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer watch.Stop()
	running := map[string]time.Time{}
	waitRunning := func(name string) time.Time {
		for {
			if at, ok := running[name]; ok {
				return at
			}
			ev, ok := <-watch.ResultChan()
			if !ok {
				b.Fatal("watch ended")
			}
			if pod, ok := ev.Object.(*corev1.Pod); ok && pod.Status.Phase == corev1.PodRunning {
				if _, seen := running[pod.Name]; !seen {
					running[pod.Name] = time.Now()
				}
			}
		}
	}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "startup", Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{testbed.WorkloadContainer(image)}, TerminationGracePeriodSeconds: ptr.To[int64](0)}}
	}
	// The first pod pulls and unpacks the image.
	testbed.MustCreate(ctx, b, c.Client, pod("warm"))
	waitRunning("warm")
	var took []time.Duration
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("p-%d", i)
		i++
		start := time.Now()
		testbed.MustCreate(ctx, b, c.Client, pod(name))
		took = append(took, waitRunning(name).Sub(start))
		b.StopTimer()
		if err := c.Client.Delete(ctx, pod(name), client.GracePeriodSeconds(0)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
