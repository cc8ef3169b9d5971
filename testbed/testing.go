package testbed

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// StartForTest starts a testbed for a test and stops it when the test ends. Without the
// binaries it skips the test, unless MESHFED_REQUIRE_TESTBED is set (as `make test` does),
// so that `go test ./...` on a machine without `make tools` still runs the unit tests. With
// -short it skips. With MESHFED_TESTBED_KEEP_LOGS set, a failed test keeps the processes'
// logs.
func StartForTest(t testing.TB, opts Options) *Testbed {
	t.Helper()
	if testing.Short() {
		t.Skip("starts local clusters; skipped with -short")
	}
	if (opts.Operator || opts.Pods) && !canCreateNetns() {
		t.Skip(ErrNeedsRoot.Error())
	}
	// controller-runtime clients log through a global logger; tests keep it quiet.
	logf.SetLogger(logr.Discard())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb, err := Start(ctx, opts)
	if tb != nil {
		t.Cleanup(func() {
			// A failed test keeps the logs of every process when asked to.
			if t.Failed() && os.Getenv(KeepLogsEnv) != "" {
				tb.removeDir = false
				t.Logf("testbed logs kept in %s", tb.Dir)
			}
			tb.Stop()
		})
	}
	if errors.Is(err, ErrMissingBinaries) && os.Getenv("MESHFED_REQUIRE_TESTBED") == "" {
		t.Skipf("%v (set MESHFED_REQUIRE_TESTBED=1 to fail instead)", err)
	}
	if err != nil {
		t.Fatalf("start testbed: %v", err)
	}
	return tb
}

// RequireWorkloads skips the test when the testbed cannot run workload pods (not root).
func RequireWorkloads(t testing.TB, tb *Testbed) {
	t.Helper()
	if !CanRunWorkloads(tb) {
		t.Skip(ErrNeedsRoot.Error())
	}
}

// CanRunWorkloads reports whether the testbed's clusters can run workload pods.
func CanRunWorkloads(tb *Testbed) bool {
	return len(tb.Clusters) > 0 && tb.Clusters[0].network != nil
}

// Eventually polls check every 50 ms until it returns nil, and fails the test with the
// last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := Poll(context.Background(), timeout, what, check); err != nil {
		t.Fatal(err)
	}
}

// NoneWithin fails the test if ch yields anything within d: "nothing more was sent" is
// checked over a bounded wait, not at one instant.
func NoneWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Errorf("%s: got %v", what, v)
	case <-time.After(d):
	}
}

// MustCreate creates obj, accepting one that already exists, and fails the test otherwise.
func MustCreate(ctx context.Context, t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}
