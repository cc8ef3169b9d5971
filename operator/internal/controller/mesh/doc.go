// Package mesh reconciles a member cluster's Mesh: it checks the spec, keeps the member's
// CA Issuer backed by the intermediate the hub writes (and has workload certificates follow
// it), deploys the east-west gateway, and reports the xDS server's state. Each of these is a
// phase with a condition of its own; Ready sums them up.
//
// It works from the member's own API server only and imports nothing of the hub
// (federation/clusters, federation/mcs, controller/meshfederation): when the hub is down,
// the member keeps serving.
package mesh
