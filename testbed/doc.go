// Package testbed runs local Kubernetes clusters without containers, for meshfed's tests,
// benchmarks, kuttl scenarios and `make demo`.
//
// A cluster is real control-plane processes: a kube-apiserver (with its own etcd prefix in
// one etcd the testbed shares between clusters), a kube-controller-manager (so garbage
// collection, namespace deletion and EndpointSlices are real) and cert-manager's controllers.
// Each cluster owns a loopback block 127.<octet>.0.0/16, taken under a file lock so that
// testbeds in parallel test binaries never collide: the API server listens on 127.<octet>.0.1
// and workload "pods" are real processes on 127.<octet>.1.x, with a small kubelet stand-in
// that creates their Pod objects and keeps Pod status (IP, Running, Ready) true to the
// process.
//
// The testbed must stop every process it started, also when a test fails: Stop is safe to
// call more than once, and every child runs in its own process group that Stop kills.
package testbed
