// Package podctl is how the testbed steers its workload pods from outside, the way a
// test needs to: a readiness endpoint for the pod's probe that a test can turn off, and a
// crash on demand.
//
//	GET  /readyz          200 while the app is ready and readiness is not turned off, else 503
//	POST /ready?v=false   turns readiness off (v=true turns it back on)
//	POST /kill            ends the process with SIGKILL, as a crash would: no answer comes
package podctl

import (
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// Handle adds the endpoints to mux; ready says whether the app itself is ready.
func Handle(mux *http.ServeMux, ready func() bool) {
	var off atomic.Bool
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if off.Load() || !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n")) //nolint:errcheck
	})
	mux.HandleFunc("POST /ready", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseBool(r.URL.Query().Get("v"))
		if err != nil {
			http.Error(w, "v must be true or false", http.StatusBadRequest)
			return
		}
		off.Store(!v)
	})
	mux.HandleFunc("POST /kill", func(http.ResponseWriter, *http.Request) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	})
}
