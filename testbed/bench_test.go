package testbed_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testbed"
)

// BenchmarkStart3Clusters measures how long a 3-cluster testbed (with the operator in every
// cluster) takes to be ready, with warm binaries, and how much memory its processes hold.
// Run it with `make bench` or `go test -run '^$' -bench Start3 -benchtime 3x ./testbed`.
func BenchmarkStart3Clusters(b *testing.B) {
	var rssBytes int64
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		tb, err := testbed.Start(ctx, testbed.Options{Clusters: 3, Operator: true})
		cancel()
		if err != nil {
			if tb != nil {
				tb.Stop()
			}
			b.Fatal(err)
		}
		b.StopTimer()
		rssBytes = 0
		for _, pid := range tb.PIDs() {
			rssBytes += residentBytes(pid)
		}
		tb.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(rssBytes)/(1<<20), "MiB-rss")
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
