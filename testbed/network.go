package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Address plan. Cluster c of a testbed owns octet o (taken under a file lock):
//
//	127.o.0.1        its API server and the operator's endpoints (loopback, no root needed)
//	198.18.o.N       its workload "pods", inside network namespace mftb<o> (root needed)
//	198.19.o.1/24    host end of the veth pair to that namespace
//	198.19.o.2/24    namespace end, the pods' default gateway is the host end
//
// Pod addresses cannot be loopback: the API server refuses loopback addresses in
// EndpointSlices. 198.18.0.0/15 is the range reserved for benchmarking (RFC 2544), so it
// clashes with no real network, and its traffic never leaves this machine.

// ErrNeedsRoot is returned for pods (and so for meshfed, which runs as pods) when the
// testbed cannot create network namespaces.
var ErrNeedsRoot = errors.New("pods need root: they live in network namespaces (run as root, e.g. in CI); everything else runs without")

const maxOctet = 250

// octetLease is the exclusive use of one 127.o/16 and 198.18.o/24 block, held through an
// flock that the kernel releases if the process dies.
type octetLease struct {
	octet int
	file  *os.File
}

func leaseOctets(n int) ([]octetLease, error) {
	dir := filepath.Join(os.TempDir(), "meshfed-testbed-locks")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, err
	}
	var leases []octetLease
	for o := 1; o <= maxOctet && len(leases) < n; o++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("octet-%d.lock", o)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			releaseOctets(leases)
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		leases = append(leases, octetLease{octet: o, file: f})
	}
	if len(leases) < n {
		releaseOctets(leases)
		return nil, fmt.Errorf("no free address block for %d clusters: too many testbeds are running", n)
	}
	return leases, nil
}

func releaseOctets(leases []octetLease) {
	for _, l := range leases {
		l.file.Close() // closing releases the flock
	}
}

// apiServerIP is the loopback address of cluster octet o's control plane.
func apiServerIP(o int) string { return fmt.Sprintf("127.%d.0.1", o) }

// podNetwork is the network namespace that holds one cluster's pods.
type podNetwork struct {
	octet  int
	netns  string
	hostIf string
	nsIf   string
}

// CheckPods returns ErrNeedsRoot when this machine cannot run the testbed's pods (and so
// meshfed): a command can say so before it starts anything.
func CheckPods() error {
	if !canCreateNetns() {
		return ErrNeedsRoot
	}
	return nil
}

// canCreateNetns reports whether this process may create network namespaces.
func canCreateNetns() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := exec.LookPath("ip")
	return err == nil
}

func setupPodNetwork(o int) (*podNetwork, error) {
	n := &podNetwork{
		octet:  o,
		netns:  fmt.Sprintf("mftb%d", o),
		hostIf: fmt.Sprintf("mfh%d", o),
		nsIf:   fmt.Sprintf("mfp%d", o),
	}
	n.teardown() // a namespace left by a testbed that was killed; the lease makes it ours
	host, ns := n.hostIP(), fmt.Sprintf("198.19.%d.2", o)
	steps := [][]string{
		{"netns", "add", n.netns},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"link", "set", n.nsIf, "netns", n.netns},
		{"addr", "add", host + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.netns, "link", "set", "lo", "up"},
		{"-n", n.netns, "addr", "add", ns + "/24", "dev", n.nsIf},
		{"-n", n.netns, "link", "set", n.nsIf, "up"},
		{"-n", n.netns, "route", "add", "default", "via", host},
		{"route", "add", fmt.Sprintf("198.18.%d.0/24", o), "via", ns, "dev", n.hostIf},
		// The namespace routes for the pods that have namespaces of their own (pods.go).
		{"netns", "exec", n.netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	}
	for _, args := range steps {
		if err := runIP(args...); err != nil {
			n.teardown()
			return nil, err
		}
	}
	// Pods of one cluster reach pods of another through the host: forward what arrives on
	// this veth, and only on it (the machine's global ip_forward is left alone).
	if err := os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/forwarding", n.hostIf), []byte("1"), 0o644); err != nil {
		n.teardown()
		return nil, fmt.Errorf("enable forwarding on %s: %w", n.hostIf, err)
	}
	return n, nil
}

// nsIP is the namespace's address on the veth pair to the host.
func (n *podNetwork) nsIP() string { return fmt.Sprintf("198.19.%d.2", n.octet) }

// hostIP is the host's address on the pod network: pods reach the host there.
func (n *podNetwork) hostIP() string { return fmt.Sprintf("198.19.%d.1", n.octet) }

// teardown deletes the namespace (the veth pair and routes go with it) and the policy
// rules of isolate.
func (n *podNetwork) teardown() {
	// The network namespaces of the node's pods, if the node could not remove them.
	pods, _ := filepath.Glob("/run/netns/" + n.netns + "p*")
	for _, p := range pods {
		_ = runIP("netns", "delete", filepath.Base(p))
	}
	_ = runIP("netns", "delete", n.netns)
	_ = runIP("link", "delete", n.hostIf)
	for runIP("rule", "del", "iif", n.hostIf) == nil {
	}
}

// Priorities of the isolation rules: the exceptions come first.
const (
	rulePriorityAllow = "900"
	rulePriorityBlock = "901"
)

// isolate stops this namespace's pods from reaching other's pods through the host, except
// to the addresses in reachable; pods at the addresses in answering may still send to
// anyone (a gateway answers what it was sent). The rules are the host's policy routing
// (`ip rule`) on the veth the traffic comes in on, so the host itself still reaches every
// pod.
func (n *podNetwork) isolate(other *podNetwork, reachable, answering []string) error {
	for _, ip := range answering {
		// The same for every other namespace: added once.
		if err := runIP("rule", "add", "iif", n.hostIf, "from", ip+"/32", "lookup", "main", "priority", rulePriorityAllow); err != nil && !strings.Contains(err.Error(), "File exists") {
			return err
		}
	}
	for _, ip := range reachable {
		if err := runIP("rule", "add", "iif", n.hostIf, "to", ip+"/32", "lookup", "main", "priority", rulePriorityAllow); err != nil {
			return err
		}
	}
	return runIP("rule", "add", "iif", n.hostIf, "to", fmt.Sprintf("198.18.%d.0/24", other.octet), "blackhole", "priority", rulePriorityBlock)
}

func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs fn on an OS thread moved into the network namespace name (/run/netns):
// sockets fn opens live there. The thread comes back to the testbed's namespace before it
// is unlocked. It must not end instead: the processes the testbed started from that thread
// would get their Pdeathsig (SIGKILL), since the kernel ties it to the parent thread.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stuck in the other namespace (it never happens in practice): the thread stays
		// locked, and Go ends it with this goroutine rather than reuse it elsewhere.
		return fmt.Errorf("leave network namespace %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
