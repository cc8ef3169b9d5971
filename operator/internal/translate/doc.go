// Package translate turns what a member cluster knows — its Services and EndpointSlices,
// the ServiceImports and remote EndpointSlices the hub writes, its MeshPeers and traffic
// policies — into xDS resources for proxyless gRPC clients and servers.
//
// It owns the naming of xDS resources and the rules of the data path (local endpoints
// first, then remote clusters in failover order; endpoints of another network reached
// through that network's east-west gateway). It must never talk to an API server: BuildModel
// and Translate are pure functions over plain data, tested with golden files.
//
// Invariants: resources are never modified once built (a Translator's later runs, and the
// xDS server, share them), and a resource type's version moves only when that type's
// content does.
package translate
