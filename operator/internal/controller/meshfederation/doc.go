// Package meshfederation is the hub's MeshFederation reconciler. For each federation it
// connects the members through the cluster registry, aggregates their ServiceExports with
// the pure functions of federation/mcs, and writes the result into every member:
// ServiceImports, EndpointSlices of the other members' endpoints, ServiceExport conditions
// and MeshPeers. Everything it writes carries the federation label, so removing a member or
// the federation deletes exactly what it wrote.
//
// Invariants: it never deletes an import while a member it has not yet heard from could
// still export it (hub restarts), it keeps a disconnected member's endpoints for a grace
// period, and it touches no object in a member that lacks its labels.
package meshfederation
