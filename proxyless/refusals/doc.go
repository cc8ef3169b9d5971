// Package refusals counts, in a grpc-go server, the calls that meshfed's authorization
// refuses.
//
// The control plane names this package's audit logger (gRFC A59) on the RBAC filters it
// gives proxyless servers, as an optional logger: a grpc-go server that imports the package
// counts every refused call in the Prometheus counter meshfed_authz_refused_calls_total
// (registered with prometheus.DefaultRegisterer); a server that does not import it, or a
// gRPC implementation without audit logging, serves the same and counts nothing.
//
//	import _ "github.com/meshfed/meshfed/proxyless/refusals"
//
// What a refused call carries — its method, and the caller's SPIFFE ID — comes from the
// network, so the counter's labels are bounded: past MaxValues distinct values of a label,
// the others are counted under "other". A caller that invents method names cannot grow the
// server's memory.
package refusals
