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
// content does. The Translator's cache re-translates a service only when its fingerprint
// changes; the fingerprint covers every field of the model (TestFingerprintCoversTheModel),
// and the cache serves what a fresh build would (TestIncrementalEqualsFresh).
//
// Files: model.go and build.go (the model, from the member's objects), names.go (resource
// names), grpc.go and endpoints.go (the proxyless gRPC resources), envoy.go and gateway.go
// (Envoy sidecars, the east-west gateway), resources.go (the resource lists, packing,
// shared messages), translator.go and fingerprint.go (the incremental cache), check.go
// (validation and references).
package translate
