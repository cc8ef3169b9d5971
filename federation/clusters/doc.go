// Package clusters is the hub's registry of member clusters: one client and informer cache
// per member, built from its kubeconfig, and a health probe that tells connected from
// disconnected within seconds. Controllers ask the registry for a member and get
// ErrClusterNotConnected when it cannot serve; they never build clients of their own.
//
// A member's cache keeps the last objects it saw while the member is away, so the hub can
// keep serving the member's last known exports for a grace period.
package clusters
