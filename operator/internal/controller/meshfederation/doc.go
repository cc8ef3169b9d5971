// Package meshfederation is the hub's MeshFederation reconciler. For each federation it
// connects the members through the cluster registry, aggregates their ServiceExports with
// the pure functions of federation/mcs, and writes the result into every member:
// ServiceImports, EndpointSlices of the other members' endpoints, ServiceExport conditions
// and MeshPeers. Everything it writes carries the federation label, so removing a member or
// the federation deletes exactly what it wrote.
//
// Files: controller.go (wiring, Reconcile), scope.go (one pass's state), phases.go (connect,
// gather, aggregate, write, delete), sync.go (the writes into a member), trust.go (the trust
// phase), trust_certs.go (the hub's cert-manager objects), trust_status.go (trust status,
// rotation condition and metrics), status.go (status and Events).
//
// Invariants: it never deletes an import while a member it has not yet heard from could
// still export it (hub restarts), it keeps a disconnected member's endpoints for a grace
// period, and it touches no object in a member that lacks its labels.
package meshfederation
