// Package agent is meshfed-agent, the native sidecar the injection webhook adds to a
// meshed pod. It makes the workload's key in the pod, gets its SPIFFE certificate from the
// member's CA service with the pod's projected service-account token, writes certificate,
// key and trust bundle for grpc-go's file_watcher into the volume it shares with the app
// (one generation at a time, through a symlink swap), renews at half the lifetime and when
// the member's intermediate changes, and carries the app's xDS streams from the pod's
// loopback to the control plane over mTLS with its certificate.
package agent
