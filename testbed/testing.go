package testbed

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// StartForTest starts a testbed for a test and stops it when the test ends. Without the
// binaries it skips the test, unless MESHFED_REQUIRE_TESTBED is set (as `make test` does),
// so that `go test ./...` on a machine without `make tools` still runs the unit tests. With
// -short it skips.
func StartForTest(t testing.TB, opts Options) *Testbed {
	t.Helper()
	if testing.Short() {
		t.Skip("starts local clusters; skipped with -short")
	}
	// controller-runtime clients log through a global logger; tests keep it quiet.
	logf.SetLogger(logr.Discard())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb, err := Start(ctx, opts)
	if tb != nil {
		t.Cleanup(tb.Stop)
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
