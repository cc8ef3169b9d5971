package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// testCA makes a certificate signed by parent (self-signed when parent is nil). Tests only:
// the product never signs; cert-manager does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCert(t *testing.T, cn string, isCA bool, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (c *testCA) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func TestBundle(t *testing.T) {
	a, b := newCert(t, "a", true, nil), newCert(t, "b", true, nil)
	var x, y Bundle
	x.Add(a.cert)
	x.Add(b.cert)
	x.Add(a.cert)
	y.Add(b.cert)
	y.Add(a.cert)
	if len(x.Roots) != 2 || x.Version() != y.Version() {
		t.Errorf("a bundle holds each root once, in an order that does not depend on insertion: %d roots, versions %s %s", len(x.Roots), x.Version(), y.Version())
	}
	var z Bundle
	z.Add(a.cert)
	if z.Version() == x.Version() {
		t.Error("different bundles share a version")
	}
	if got := x.Fingerprints(); len(got) != 2 || got[0] == got[1] || len(got[0]) != 64 {
		t.Errorf("fingerprints %v", got)
	}
}

// TestSignedByTellsGenerationsApart: the intermediate of a member under the old root and
// its successor under the new one share the member's key; a workload certificate whose
// chain names the old one is not current, though the new one's key verifies it.
func TestSignedByTellsGenerationsApart(t *testing.T) {
	oldRoot, newRoot := newCert(t, "old root", true, nil), newCert(t, "new root", true, nil)
	oldInter := newCert(t, "intermediate", true, oldRoot)
	newInter := reissue(t, oldInter, newRoot)
	leaf := newCert(t, "workload", false, oldInter)
	withOld := append(leaf.certPEM(), oldInter.certPEM()...)
	if !SignedBy(withOld, oldInter.cert) {
		t.Error("a workload certificate is not seen as issued by its own intermediate")
	}
	if SignedBy(withOld, newInter.cert) {
		t.Error("a workload certificate whose chain names the old intermediate counts as issued by its successor")
	}
	if !SignedBy(leaf.certPEM(), newInter.cert) {
		t.Error("without a chain, the key decides")
	}
}

// reissue signs ca's key again under parent, as the hub does for a member whose key did
// not change.
func reissue(t *testing.T, ca, parent *testCA) *testCA {
	t.Helper()
	tmpl := *ca.cert
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + 1)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, parent.cert, &ca.key.PublicKey, parent.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: ca.key}
}
