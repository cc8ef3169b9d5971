package testbed

import (
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation/trust"
)

// TestWorkloadCertificate: a workload certificate names only the SPIFFE ID, comes from the
// member's CA Issuer, and has a valid, distinct name however long its namespace and account.
func TestWorkloadCertificate(t *testing.T) {
	c := WorkloadCertificate("meshfed-system", "example.org", "shop", "reviews")
	if got := c.Spec.URIs; len(got) != 1 || got[0] != "spiffe://example.org/ns/shop/sa/reviews" || len(c.Spec.DNSNames) != 0 {
		t.Errorf("SANs %v %v: want only the SPIFFE URI", got, c.Spec.DNSNames)
	}
	if c.Spec.IssuerRef.Name != trust.MemberIssuer || c.Namespace != "meshfed-system" {
		t.Errorf("issuer %v in %s", c.Spec.IssuerRef, c.Namespace)
	}
	long := WorkloadName(strings.Repeat("n", 40), strings.Repeat("s", 40))
	if len(long) > 63 || long == WorkloadName(strings.Repeat("n", 40), strings.Repeat("s", 39)) {
		t.Errorf("long names must stay valid and distinct: %q", long)
	}
}
