package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

const td = "cluster.local"

// csrWith builds a CSR like IntermediateCSR's, changed by edit, signed by key.
func csrWith(t *testing.T, key crypto.Signer, edit func(*x509.CertificateRequest, *pki.NameConstraints, *int, *bool)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: IntermediateSubject("a")}}
	nc := &pki.NameConstraints{PermittedURIDomains: []string{td}}
	pathLen, isCA := 0, true
	if edit != nil {
		edit(tmpl, nc, &pathLen, &isCA)
	}
	basic, err := pki.MarshalBasicConstraints(isCA, &pathLen)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pki.MarshalNameConstraints(nc, true)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtraExtensions = append([]pkix.Extension{basic, names}, tmpl.ExtraExtensions...)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestCheckIntermediateRequestRefusesMoreThanAnIntermediate: a member's CSR is hostile
// input to the hub; it may ask for its own name-constrained intermediate and nothing else.
func TestCheckIntermediateRequestRefusesMoreThanAnIntermediate(t *testing.T) {
	key, err := NewIntermediateKey()
	if err != nil {
		t.Fatal(err)
	}
	good, err := IntermediateCSR(key, "a", td)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckIntermediateRequest(good, "a", td); err != nil {
		t.Fatalf("the member's own CSR is refused: %v", err)
	}
	if !RequestFor(good, key) {
		t.Error("RequestFor does not recognise the CSR's key")
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(strings.Replace(string(good), string(good[len(good)/2:len(good)/2+4]), "AAAA", 1))
	cases := []struct {
		name string
		csr  []byte
		want string
	}{
		{"no name constraints", csrWith(t, key, func(_ *x509.CertificateRequest, nc *pki.NameConstraints, _ *int, _ *bool) {
			nc.PermittedURIDomains = nil
			nc.PermittedDNSDomains = []string{"example.com"}
		}), "name constraints"},
		{"another trust domain", csrWith(t, key, func(_ *x509.CertificateRequest, nc *pki.NameConstraints, _ *int, _ *bool) {
			nc.PermittedURIDomains = []string{"other.example"}
		}), "name constraints"},
		{"a second permitted domain", csrWith(t, key, func(_ *x509.CertificateRequest, nc *pki.NameConstraints, _ *int, _ *bool) {
			nc.PermittedURIDomains = []string{td, "other.example"}
		}), "name constraints"},
		{"permitted DNS names besides", csrWith(t, key, func(_ *x509.CertificateRequest, nc *pki.NameConstraints, _ *int, _ *bool) {
			nc.PermittedDNSDomains = []string{"bank.example"}
		}), "name constraints"},
		{"a path length of 1", csrWith(t, key, func(_ *x509.CertificateRequest, _ *pki.NameConstraints, p *int, _ *bool) { *p = 1 }), "path length of 0"},
		{"not a CA", csrWith(t, key, func(_ *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, ca *bool) { *ca = false }), "basic constraints"},
		{"another member's name", csrWith(t, key, func(r *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, _ *bool) {
			r.Subject.CommonName = IntermediateSubject("b")
		}), "subject"},
		{"an organisation besides", csrWith(t, key, func(r *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, _ *bool) {
			r.Subject.Organization = []string{"system:masters"}
		}), "subject"},
		{"a SPIFFE URI SAN", csrWith(t, key, func(r *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, _ *bool) {
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: td, Path: "/ns/kube-system/sa/admin"}}
		}), "subject alternative names"},
		{"a DNS SAN", csrWith(t, key, func(r *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, _ *bool) {
			r.DNSNames = []string{"kubernetes.default.svc"}
		}), "subject alternative names"},
		{"an extended key usage", csrWith(t, key, func(r *x509.CertificateRequest, _ *pki.NameConstraints, _ *int, _ *bool) {
			ext, err := pki.MarshalExtKeyUsage([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.ExtraExtensions = []pkix.Extension{ext}
		}), "extension"},
		{"a weak key", csrWith(t, weak, nil), "key must be"},
		{"a tampered signature", tampered, "request"},
		{"two requests", append(slices.Clone(good), good...), "exactly one"},
		{"a certificate, not a request", PEM(newCert(t, "x", true, nil).cert), "exactly one"},
		{"an oversized request", append(slices.Clone(good), make([]byte, MaxRequestBytes)...), "more than"},
		{"garbage", []byte("not a CSR"), "exactly one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckIntermediateRequest(tc.csr, "a", td)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("the error quotes the request: %v", err)
			}
		})
	}
}

// signAsCertManager signs a CSR the way cert-manager's CA issuer does for a
// CertificateRequest with isCA (pki.CertificateTemplateFromCSRPEM), then lets edit
// change the template.
func signAsCertManager(t *testing.T, csr []byte, root *testCA, edit func(*x509.Certificate)) []byte {
	t.Helper()
	tmpl, err := pki.CertificateTemplateFromCSRPEM(csr,
		pki.CertificateTemplateOverrideDuration(time.Hour),
		pki.CertificateTemplateValidateAndOverrideBasicConstraints(true, nil),
		pki.CertificateTemplateValidateAndOverrideKeyUsages(caKeyUsage, nil))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, tmpl.PublicKey, root.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseIssued(t *testing.T) {
	root, other := newCert(t, "root", true, nil), newCert(t, "other root", true, nil)
	key, err := NewIntermediateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := IntermediateCSR(key, "a", td)
	if err != nil {
		t.Fatal(err)
	}
	issued := signAsCertManager(t, csr, root, nil)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, err := IntermediateCSR(otherKey, "a", td)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		cert, ca   []byte
		want       string
		wantIssued bool
	}{
		{"cert-manager's signature is accepted", issued, PEM(root.cert), "", true},
		{"a chain ending in the root is accepted", append(slices.Clone(issued), PEM(root.cert)...), PEM(root.cert), "", true},
		{"an issuer that drops the name constraints is refused", signAsCertManager(t, csr, root, func(c *x509.Certificate) { c.PermittedURIDomains = nil }), PEM(root.cert), "lost its name constraints", false},
		{"a certificate for another key is refused", signAsCertManager(t, otherCSR, root, nil), PEM(root.cert), "not for the member's key", false},
		{"a leaf is refused", signAsCertManager(t, csr, root, func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }), PEM(root.cert), "not a CA", false},
		{"another root is refused", issued, PEM(other.cert), "does not chain", false},
		{"no root is refused", issued, nil, "no valid root", false},
		{"garbage is refused", []byte("garbage"), PEM(root.cert), "not valid PEM", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := ParseIssued("CertificateRequest hub/fed-a-ca-x", tc.cert, tc.ca, csr)
			if tc.wantIssued {
				if err != nil {
					t.Fatal(err)
				}
				if len(ca.Chain) != 1 || !ca.Root.Equal(root.cert) || !SameKey(ca.Chain[0], key) {
					t.Errorf("chain of %d, root %v", len(ca.Chain), ca.Root.Subject)
				}
				if !slices.Equal(ca.Chain[0].PermittedURIDomains, []string{td}) || !ca.Chain[0].PermittedDNSDomainsCritical {
					t.Errorf("name constraints %v (critical %v)", ca.Chain[0].PermittedURIDomains, ca.Chain[0].PermittedDNSDomainsCritical)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "CertificateRequest hub/fed-a-ca-x") {
				t.Errorf("error %q must name the request", err)
			}
		})
	}

	// What a stolen intermediate key can do: sign workload certificates in its own trust
	// domain, not in another one.
	inter := &testCA{cert: mustParse(t, issued), key: key}
	pool := x509.NewCertPool()
	pool.AddCert(root.cert)
	for _, host := range []string{td, "bank.example"} {
		leaf := leafFor(t, inter, &url.URL{Scheme: "spiffe", Host: host, Path: "/ns/shop/sa/web"})
		err := VerifyChain([]*x509.Certificate{leaf, inter.cert}, pool, x509.ExtKeyUsageAny)
		if (host == td) != (err == nil) {
			t.Errorf("a workload certificate for spiffe://%s under the intermediate: verify error %v", host, err)
		}
	}
}

func mustParse(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	certs, err := ParseCertificates(data)
	if err != nil || len(certs) == 0 {
		t.Fatalf("parse: %v", err)
	}
	return certs[0]
}

func leafFor(t *testing.T, ca *testCA, id *url.URL) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{id},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestPlanSigning(t *testing.T) {
	now := time.Now()
	const life = 30 * time.Hour
	oldRoot, newRoot := &x509.Certificate{Raw: []byte("old root")}, &x509.Certificate{Raw: []byte("new root")}
	issued := func(name, sha string, notAfter time.Time) Signing {
		return Signing{Name: name, RequestSHA: sha, Duration: life, CA: &IntermediateCA{Chain: []*x509.Certificate{{NotBefore: notAfter.Add(-life), NotAfter: notAfter}}, Root: oldRoot}}
	}
	waiting := func(name, sha string) Signing { return Signing{Name: name, RequestSHA: sha, Duration: life} }
	failed := func(name, sha string, ago time.Duration) Signing {
		return Signing{Name: name, RequestSHA: sha, Duration: life, FailedSince: now.Add(-ago)}
	}
	invalid := func(name, sha string) Signing {
		return Signing{Name: name, RequestSHA: sha, Duration: life, Invalid: errors.New("bad")}
	}
	shorter := issued("r1", "k1", now.Add(20*time.Hour))
	shorter.Duration = time.Hour
	successor := issued("r2", "k1", now.Add(15*time.Hour)) // issued now, with a shorter life
	successor.CA.Chain[0].NotBefore = now
	resigned := issued("r2", "k1", now.Add(30*time.Hour))
	resigned.CA.Root = newRoot
	const renew = 10 * time.Hour
	cases := []struct {
		name        string
		reqs        []Signing
		want        string
		root        *x509.Certificate
		current     string
		create      bool
		del         []string
		renewSoonAt time.Time
	}{
		{name: "nothing yet: ask", want: "k1", create: true},
		{name: "nothing published: nothing asked", want: ""},
		{name: "waiting: do not ask twice", reqs: []Signing{waiting("r1", "k1")}, want: "k1"},
		{name: "issued and fresh: keep, renew later", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour))}, want: "k1", current: "r1", renewSoonAt: now.Add(10 * time.Hour)},
		{name: "a new key: ask, keep the old until then", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour))}, want: "k2", current: "r1", create: true},
		{name: "the new key issued: the old goes", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour)), issued("r2", "k2", now.Add(30*time.Hour))}, want: "k2", current: "r2", del: []string{"r1"}, renewSoonAt: now.Add(20 * time.Hour)},
		{name: "in the renewal window: ask again for the same key", reqs: []Signing{issued("r1", "k1", now.Add(5*time.Hour))}, want: "k1", current: "r1", create: true},
		{name: "renewal waiting: keep both", reqs: []Signing{issued("r1", "k1", now.Add(5*time.Hour)), waiting("r2", "k1")}, want: "k1", current: "r1"},
		{name: "a refused request stays a minute", reqs: []Signing{failed("r1", "k1", 10*time.Second)}, want: "k1"},
		{name: "then it is asked again", reqs: []Signing{failed("r1", "k1", 2*time.Minute)}, want: "k1", create: true, del: []string{"r1"}},
		{name: "an invalid certificate goes and is asked again", reqs: []Signing{invalid("r1", "k1")}, want: "k1", create: true, del: []string{"r1"}},
		{name: "a new lifetime: ask again", reqs: []Signing{shorter}, want: "k1", current: "r1", create: true},
		{name: "a successor that expires sooner still replaces", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour)), successor}, want: "k1", current: "r2", del: []string{"r1"}, renewSoonAt: now.Add(5 * time.Hour)},
		{name: "a stale request for an old key goes", reqs: []Signing{issued("r1", "k2", now.Add(20*time.Hour)), waiting("r0", "k1")}, want: "k2", current: "r1", del: []string{"r0"}, renewSoonAt: now.Add(10 * time.Hour)},
		{name: "under the issuer's root: keep", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour))}, want: "k1", root: oldRoot, current: "r1", renewSoonAt: now.Add(10 * time.Hour)},
		{name: "under a root the issuer no longer signs with: ask again, keep it until then", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour))}, want: "k1", root: newRoot, current: "r1", create: true},
		{name: "re-signed under the issuer's root: the old goes", reqs: []Signing{issued("r1", "k1", now.Add(20*time.Hour)), resigned}, want: "k1", root: newRoot, current: "r2", del: []string{"r1"}, renewSoonAt: now.Add(20 * time.Hour)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanSigning(tc.reqs, tc.want, tc.root, life, renew, now)
			current := ""
			if p.Current != nil {
				current = p.Current.Name
			}
			if current != tc.current || p.Create != tc.create || !slices.Equal(p.Delete, tc.del) || !p.RenewAt.Equal(tc.renewSoonAt) {
				t.Errorf("current %q create %v delete %v renew at %v; want %q %v %v %v", current, p.Create, p.Delete, p.RenewAt, tc.current, tc.create, tc.del, tc.renewSoonAt)
			}
		})
	}
}

func TestMemberCACerts(t *testing.T) {
	root, other := newCert(t, "root", true, nil), newCert(t, "other root", true, nil)
	key, _ := NewIntermediateKey()
	newKey, _ := NewIntermediateKey()
	csr, err := IntermediateCSR(key, "a", td)
	if err != nil {
		t.Fatal(err)
	}
	issued := signAsCertManager(t, csr, root, nil)
	public := func(cert []byte, rootPEM []byte, bundle ...*x509.Certificate) map[string]string {
		return map[string]string{KeyCert: string(cert), KeyRoot: string(rootPEM), KeyBundle: string(PEM(bundle...))}
	}
	held := map[string][]byte{KeyCert: []byte("old cert"), KeyKey: []byte("old key"), KeyRoot: []byte("old root"), KeyChain: []byte("old chain"), KeyBundle: []byte("old bundle")}

	got, err := MemberCACerts(public(issued, PEM(root.cert), root.cert, other.cert), key, []byte("the key"), held)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[KeyKey]) != "the key" || string(got[KeyCert]) != string(issued) || string(got[KeyChain]) != string(issued)+string(PEM(root.cert)) ||
		string(got[KeyBundle]) != string(PEM(root.cert, other.cert)) {
		t.Errorf("meshfed-cacerts data %q", got)
	}

	// The member made a new key: it keeps its old pair, with the hub's bundle.
	got, err = MemberCACerts(public(issued, PEM(root.cert), other.cert, root.cert), newKey, []byte("new key"), held)
	if err != nil || string(got[KeyKey]) != "old key" || string(got[KeyCert]) != "old cert" || string(got[KeyBundle]) != string(PEM(other.cert, root.cert)) {
		t.Errorf("with a new key: %q, %v", got, err)
	}
	if _, err := MemberCACerts(public(issued, PEM(root.cert), root.cert), newKey, []byte("new key"), nil); !errors.Is(err, ErrOtherKey) {
		t.Errorf("with a new key and nothing held: %v, want ErrOtherKey", err)
	}

	// What the hub wrote is checked.
	for name, tc := range map[string]struct {
		public map[string]string
		want   string
	}{
		"a root outside the bundle": {public(issued, PEM(root.cert), other.cert), "not in the trust bundle"},
		"another root":              {public(issued, PEM(other.cert), other.cert), "does not chain"},
		"no bundle":                 {public(issued, PEM(root.cert)), "trust-bundle.pem"},
		"garbage":                   {public([]byte("garbage"), PEM(root.cert), root.cert), "tls.crt"},
	} {
		if _, err := MemberCACerts(tc.public, key, []byte("k"), held); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, tc.want)
		}
	}
}
