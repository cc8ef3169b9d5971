// Package xds serves the member's xDS configuration over ADS (go-control-plane's snapshot
// cache, ads=false, since proxyless gRPC asks for subsets of names), with each resource
// encoded once for all the proxies it is sent to.
//
// It owns the push pipeline: changes are coalesced for a debounce window, the
// configuration is rebuilt and checked, and a snapshot is set only when some resource type
// changed. A configuration that fails the checks never replaces the one being served. A
// cluster the new configuration drops stays served until every gRPC proxy has ACKed the
// routes that stopped using it (make before break, retire.go), so that a route change such
// as a split's weights loses no call. It counts pushes, NACKs and convergence with Istio's
// meanings.
package xds
