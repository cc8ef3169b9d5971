// Package testbed runs local Kubernetes clusters without containers, for meshfed's tests,
// benchmarks, kuttl scenarios and `make demo`.
//
// A cluster is real control-plane processes: a kube-apiserver (with its own etcd prefix in
// one etcd the testbed shares between clusters), a kube-controller-manager (so garbage
// collection, namespace deletion and EndpointSlices are real) and cert-manager's controllers.
// Each cluster owns an address block (octet o), taken under a file lock so that testbeds in
// parallel test binaries never collide. As root, a cluster also runs pods as a user's
// cluster does: a kube-scheduler, a node agent on virtual-kubelet (package podnode) that
// runs pods from their images in network namespaces of their own, kube-proxy and CoreDNS;
// with Options.Operator, meshfed is installed from config/default and runs as pods. Test
// workloads are pods too (RunWorkload).
//
// The testbed must stop every process it started, also when a test fails: Stop is safe to
// call more than once, and every child runs in its own process group that Stop kills.
package testbed
