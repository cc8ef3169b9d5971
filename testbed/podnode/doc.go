// Package podnode is the provider of the testbed's node agent: a virtual-kubelet node
// (its node and pod controllers run unchanged) that runs pods as processes, from their
// images, without a container runtime.
//
// For each pod it makes a network namespace of its own (a veth pair to the cluster's
// network namespace, an address from the node's pod range), writes its volumes (Secret,
// ConfigMap, emptyDir, downward API, projected service-account tokens that it renews) and
// its /etc/hosts, /etc/hostname and /etc/resolv.conf, then runs the init containers in
// order (native sidecars alongside), then the containers. Each container is one process
// started through the node binary's "container-init": a new mount namespace with the
// image's root file system under an overlay, the volumes bind-mounted, chroot, the
// image's (or the pod's) user. Probes, restarts with back-off, termination with a grace
// period and logs follow the kubelet's rules.
//
// Invariants: an image is unpacked once per digest and never written after (containers
// write to their own overlay); nothing on the host outside the node's directory and the
// pod's network namespace is touched (an image's or a volume's paths are resolved inside
// their roots); what the node cannot do (privileged containers, hostPath, exec probes,
// lifecycle hooks, other volume types) fails the pod with an Event saying so.
package podnode
