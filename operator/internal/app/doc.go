// Package app assembles the operator process: it parses the role, builds the
// controller-runtime manager (metrics, health probes, leader election) and registers the
// controllers of each role. It owns no reconcile logic itself.
package app
