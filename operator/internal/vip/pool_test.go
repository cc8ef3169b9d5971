package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var (
	v4   = []corev1.IPFamily{corev1.IPv4Protocol}
	dual = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
)

func mustPool(t *testing.T, ranges ...string) *Pool {
	t.Helper()
	p, err := NewPool(ranges)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func assign(t *testing.T, p *Pool, key string, families []corev1.IPFamily, have ...string) []string {
	t.Helper()
	got, err := p.Assign(key, families, have)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return got
}

// TestAssignKeepsAndReturnsAddresses: a service keeps its address across a restart (a new
// pool seeded with what the imports hold) and gets the same one back when imported anew;
// two services never share one.
func TestAssignKeepsAndReturnsAddresses(t *testing.T) {
	p := mustPool(t, "243.0.0.0/16", "fd43:4c53::/112")
	a := assign(t, p, "shop/cart", dual)
	if len(a) != 2 || !netip.MustParsePrefix("243.0.0.0/16").Contains(netip.MustParseAddr(a[0])) ||
		!netip.MustParsePrefix("fd43:4c53::/112").Contains(netip.MustParseAddr(a[1])) {
		t.Fatalf("dual-stack service got %v", a)
	}
	if again := assign(t, p, "shop/cart", dual); !slices.Equal(again, a) {
		t.Errorf("a second pass moved the service: %v, then %v", a, again)
	}
	restarted := mustPool(t, "243.0.0.0/16", "fd43:4c53::/112")
	if kept := assign(t, restarted, "shop/cart", dual, a...); !slices.Equal(kept, a) {
		t.Errorf("after a restart: %v, want the held %v", kept, a)
	}
	p.Release("shop/cart")
	if back := assign(t, p, "shop/cart", dual); !slices.Equal(back, a) {
		t.Errorf("imported anew: %v, want its former %v", back, a)
	}
	// Another service claiming the same address does not get it.
	if other := assign(t, p, "shop/ratings", v4, a[0]); other[0] == a[0] {
		t.Errorf("two services hold %s", a[0])
	}
}

// TestAssignLeavesOutOfRangeAndReservedAddresses: an address outside the range (the range
// was changed) is given anew; the network and broadcast addresses are never given.
func TestAssignLeavesOutOfRangeAndReservedAddresses(t *testing.T) {
	p := mustPool(t, "243.1.0.0/30")
	got := assign(t, p, "shop/cart", v4, "10.0.0.1")
	if !netip.MustParsePrefix("243.1.0.0/30").Contains(netip.MustParseAddr(got[0])) {
		t.Errorf("got %v, outside the range", got)
	}
	if got := assign(t, p, "shop/other", v4, "243.1.0.0"); got[0] == "243.1.0.0" {
		t.Errorf("the network address was given")
	}
	seen := map[string]bool{}
	for i := range 2 {
		a, err := p.Assign(fmt.Sprintf("ns/s%d", i), v4, nil)
		if err == nil {
			seen[a[0]] = true
		}
	}
	for a := range seen {
		if a == "243.1.0.0" || a == "243.1.0.3" {
			t.Errorf("reserved address %s given", a)
		}
	}
	if u := p.Usage()[corev1.IPv4Protocol]; u.Held != 2 || u.Capacity != 2 {
		t.Errorf("usage %+v, want 2 of 2", u)
	}
}

// TestAssignReportsExhaustionAndMissingRanges: a full range and a family without a range
// are errors the caller can tell apart; releasing frees room.
func TestAssignReportsExhaustionAndMissingRanges(t *testing.T) {
	p := mustPool(t, "243.1.0.0/30")
	assign(t, p, "a/a", v4)
	assign(t, p, "b/b", v4)
	if _, err := p.Assign("c/c", v4, nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("a third service in a /30: %v, want ErrExhausted", err)
	}
	if _, err := p.Assign("c/c", []corev1.IPFamily{corev1.IPv6Protocol}, nil); !errors.Is(err, ErrNoRange) {
		t.Errorf("IPv6 without a range: %v, want ErrNoRange", err)
	}
	p.Release("a/a")
	assign(t, p, "c/c", v4)
}

// TestNewPoolRefusesBadRanges names what is wrong with a range.
func TestNewPoolRefusesBadRanges(t *testing.T) {
	for _, ranges := range [][]string{{"243.0.0.0"}, {"243.0.0.0/16", "10.0.0.0/16"}, {"243.0.0.0/31"}, {"fd00::/127"}} {
		if _, err := NewPool(ranges); err == nil {
			t.Errorf("%v accepted", ranges)
		}
	}
}
