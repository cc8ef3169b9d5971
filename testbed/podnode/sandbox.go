package podnode

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// network gives each pod a network namespace of its own, linked by a veth pair to the
// cluster's network namespace (the node's "bridge"): the pod's eth0 holds its /32 address
// and routes everything to the cluster namespace's address, and the cluster namespace
// routes the pod's address to its veth. Pods of the cluster, the host, and (as the
// testbed's isolation allows) other clusters reach the pod at its IP.
type network struct {
	clusterNetns string     // the cluster's network namespace (mftb<o>)
	gateway      netip.Addr // the cluster namespace's own address, pods' default route
	prefix       string     // names of pod namespaces begin with it

	mu   sync.Mutex
	pool netip.Prefix
	used map[netip.Addr]bool
}

func newNetwork(clusterNetns string, gateway netip.Addr, pool netip.Prefix) *network {
	return &network{clusterNetns: clusterNetns, gateway: gateway, prefix: clusterNetns + "p",
		pool: pool.Masked(), used: map[netip.Addr]bool{}}
}

// capacity is how many pod addresses the pool holds.
func (n *network) capacity() int {
	return 1<<(n.pool.Addr().BitLen()-n.pool.Bits()) - 2
}

// sandbox is one pod's network namespace and address, and the cluster namespace's end of
// its veth pair.
type sandbox struct {
	netns  string
	ip     netip.Addr
	hostIf string
}

// netnsPath is where ip(8) keeps the namespace.
func (s *sandbox) netnsPath() string { return "/run/netns/" + s.netns }

func (n *network) allocate() (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// The network address and the last one are left out.
	for a := n.pool.Addr().Next(); n.pool.Contains(a.Next()); a = a.Next() {
		if !n.used[a] {
			n.used[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no pod address left in %s", n.pool)
}

func (n *network) release(ip netip.Addr) {
	n.mu.Lock()
	delete(n.used, ip)
	n.mu.Unlock()
}

// create makes a pod's namespace, veth pair and routes.
func (n *network) create() (*sandbox, error) {
	ip, err := n.allocate()
	if err != nil {
		return nil, err
	}
	last := ip.As4()[3]
	// Interface names have at most 15 bytes: "mfv<octet>x<last byte>".
	hostIf := fmt.Sprintf("mfv%sx%d", strings.TrimPrefix(n.clusterNetns, "mftb"), last)
	s := &sandbox{netns: fmt.Sprintf("%s%d", n.prefix, last), ip: ip, hostIf: hostIf}
	n.remove(s) // left by a node that was killed
	steps := [][]string{
		{"netns", "add", s.netns},
		{"-n", n.clusterNetns, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", s.netns},
		{"-n", s.netns, "link", "set", "lo", "up"},
		{"-n", s.netns, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"-n", s.netns, "link", "set", "eth0", "up"},
		{"-n", s.netns, "route", "add", n.gateway.String(), "dev", "eth0"},
		{"-n", s.netns, "route", "add", "default", "via", n.gateway.String(), "dev", "eth0"},
		{"-n", n.clusterNetns, "link", "set", hostIf, "up"},
		{"-n", n.clusterNetns, "route", "add", ip.String() + "/32", "dev", hostIf},
	}
	for _, args := range steps {
		if err := runIP(args...); err != nil {
			n.destroy(s)
			return nil, fmt.Errorf("pod network: %w", err)
		}
	}
	return s, nil
}

// destroy removes the pod's veth pair and namespace, and frees the address.
func (n *network) destroy(s *sandbox) {
	n.remove(s)
	n.release(s.ip)
}

// remove deletes the veth pair first: the kernel tears a namespace down asynchronously,
// and a pair left to go with it could still hold its name when the address, and so the
// name, is given to the next pod.
func (n *network) remove(s *sandbox) {
	_ = runIP("-n", n.clusterNetns, "link", "delete", s.hostIf)
	_ = runIP("netns", "delete", s.netns)
}

func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
