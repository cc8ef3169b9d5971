// Package vip hands out ClusterSet IPs (KEP-1645): the virtual address a member gives each
// ClusterSetIP service it imports, from one range per IP family of its Mesh.
package vip

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// ErrExhausted means every address of a family's range is held by another service.
var ErrExhausted = errors.New("the ClusterSet IP range is exhausted")

// ErrNoRange means the Mesh gives no range for a family a service asks for.
var ErrNoRange = errors.New("no ClusterSet IP range for the family")

// Pool remembers which service holds which address. A service keeps an address it already
// holds for as long as the address is in its family's range and no other service holds it;
// a new one is taken at a place derived from the service's name, so that a service
// imported anew most often gets its former address back. Pool is not safe for concurrent
// use.
type Pool struct {
	ranges map[corev1.IPFamily]netip.Prefix
	holder map[netip.Addr]string
	held   map[string][]netip.Addr
}

// NewPool parses the ranges, CIDRs of at most one per family.
func NewPool(cidrs []string) (*Pool, error) {
	p := &Pool{ranges: map[corev1.IPFamily]netip.Prefix{}, holder: map[netip.Addr]string{}, held: map[string][]netip.Addr{}}
	for _, c := range cidrs {
		prefix, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("ClusterSet IP range %q: %w", c, err)
		}
		prefix = prefix.Masked()
		f := family(prefix.Addr())
		if _, dup := p.ranges[f]; dup {
			return nil, fmt.Errorf("ClusterSet IP ranges: two for %s", f)
		}
		if hostBits(prefix) < 2 {
			return nil, fmt.Errorf("ClusterSet IP range %s holds too few addresses: give at least a /%d", prefix, prefix.Addr().BitLen()-2)
		}
		p.ranges[f] = prefix
	}
	return p, nil
}

func family(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// Assign gives service key one address of each family, in the order of families, keeping
// those of have that it may keep. On an error the service holds the addresses it got (of
// other families) and none of the failed family.
func (p *Pool) Assign(key string, families []corev1.IPFamily, have []string) ([]string, error) {
	var kept []netip.Addr
	for _, s := range have {
		if a, err := netip.ParseAddr(s); err == nil {
			kept = append(kept, a)
		}
	}
	var got []netip.Addr
	var errs []error
	for _, f := range families {
		a, err := p.pick(key, f, kept)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		got = append(got, a)
	}
	for _, old := range p.held[key] {
		if !slices.Contains(got, old) {
			delete(p.holder, old)
		}
	}
	for _, a := range got {
		p.holder[a] = key
	}
	p.held[key] = got
	if len(got) == 0 {
		delete(p.held, key)
	}
	out := make([]string, len(got))
	for i, a := range got {
		out[i] = a.String()
	}
	return out, errors.Join(errs...)
}

// pick returns the address of family f for key: one of kept if it may stay, else a free one.
func (p *Pool) pick(key string, f corev1.IPFamily, kept []netip.Addr) (netip.Addr, error) {
	r, ok := p.ranges[f]
	if !ok {
		return netip.Addr{}, ErrNoRange
	}
	free := func(a netip.Addr) bool { return usable(r, a) && (p.holder[a] == "" || p.holder[a] == key) }
	for _, a := range append(kept, p.held[key]...) {
		if r.Contains(a) && free(a) {
			return a, nil
		}
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	first := nth(r, h.Sum64())
	for a := first; ; {
		if free(a) {
			return a, nil
		}
		if a = a.Next(); !r.Contains(a) {
			a = r.Addr()
		}
		if a == first {
			return netip.Addr{}, ErrExhausted
		}
	}
}

// hostBits is how many bits of r's addresses are not its prefix.
func hostBits(r netip.Prefix) int { return r.Addr().BitLen() - r.Bits() }

// nth is the address at offset n (modulo the range's size) in r.
func nth(r netip.Prefix, n uint64) netip.Addr {
	if hb := hostBits(r); hb < 64 {
		n %= 1 << hb
	}
	b := r.Addr().As16()
	for i := 15; i >= 0 && n > 0; i-- {
		sum := uint64(b[i]) + n&0xff
		b[i] = byte(sum)
		n = n>>8 + sum>>8
	}
	a := netip.AddrFrom16(b)
	if r.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// last is r's highest address.
func last(r netip.Prefix) netip.Addr {
	b := r.Addr().As16()
	for bit := 128 - hostBits(r); bit < 128; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a := netip.AddrFrom16(b)
	if r.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// usable leaves out a range's first address (its network) and, for IPv4, its last
// (broadcast): some stacks refuse to send to them.
func usable(r netip.Prefix, a netip.Addr) bool {
	return a != r.Addr() && (!a.Is4() || a != last(r))
}

// Release frees the addresses of key.
func (p *Pool) Release(key string) {
	for _, a := range p.held[key] {
		delete(p.holder, a)
	}
	delete(p.held, key)
}

// Usage is how many addresses of a family's range are held, and how many may be.
type Usage struct {
	Held, Capacity uint64
}

// Usage reports each family's range.
func (p *Pool) Usage() map[corev1.IPFamily]Usage {
	out := map[corev1.IPFamily]Usage{}
	for f, r := range p.ranges {
		u := Usage{Capacity: math.MaxUint64}
		if hb := hostBits(r); hb < 64 {
			u.Capacity = 1<<hb - 1 // the network address
			if f == corev1.IPv4Protocol {
				u.Capacity-- // the broadcast address
			}
		}
		for a := range p.holder {
			if family(a) == f {
				u.Held++
			}
		}
		out[f] = u
	}
	return out
}
