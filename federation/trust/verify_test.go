package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

func (c *testCA) keyPEM(t *testing.T) []byte {
	der, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func TestParseIntermediate(t *testing.T) {
	root := newCert(t, "root", true, nil)
	other := newCert(t, "other root", true, nil)
	inter := newCert(t, "intermediate", true, root)
	leaf := newCert(t, "not a CA", false, root)
	secret := func(cert, key, ca []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hub", Name: "fed-a-ca"},
			Data: map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": ca}}
	}
	cases := []struct {
		name   string
		secret *corev1.Secret
		want   string // "" = valid
	}{
		{"an intermediate under its root is accepted", secret(inter.certPEM(), inter.keyPEM(t), root.certPEM()), ""},
		{"a chain ending in the root is accepted", secret(append(inter.certPEM(), root.certPEM()...), inter.keyPEM(t), root.certPEM()), ""},
		{"garbage in tls.crt is refused", secret([]byte("not pem"), inter.keyPEM(t), root.certPEM()), "tls.crt holds no valid PEM certificate"},
		{"a missing root is refused", secret(inter.certPEM(), inter.keyPEM(t), nil), "ca.crt holds no valid PEM certificate"},
		{"a key of another certificate is refused", secret(inter.certPEM(), other.keyPEM(t), root.certPEM()), "private key does not match"},
		{"a leaf is refused", secret(leaf.certPEM(), leaf.keyPEM(t), root.certPEM()), "not a CA"},
		{"a root in place of an intermediate is refused", secret(root.certPEM(), root.keyPEM(t), root.certPEM()), "holds only the root"},
		{"an intermediate under another root is refused", secret(inter.certPEM(), inter.keyPEM(t), other.certPEM()), "does not chain to its ca.crt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := ParseIntermediate(tc.secret)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !ca.Chain[0].Equal(inter.cert) || !ca.Root.Equal(root.cert) || len(ca.Chain) != 1 {
					t.Errorf("chain %v root %v", ca.Chain, ca.Root.Subject)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Secret hub/fed-a-ca") || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error %q must name the Secret and quote no key", err)
			}
		})
	}
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
