package trust

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// IntermediateCA is a member's intermediate CA as the root issuer signed it, checked. The
// hub holds only this public part: the key never leaves the member.
type IntermediateCA struct {
	// Chain is the intermediate followed by any CA up to (not including) the root.
	Chain []*x509.Certificate
	// Root is the root it chains to.
	Root *x509.Certificate
}

// NotAfter is when the intermediate expires.
func (ca *IntermediateCA) NotAfter() time.Time { return ca.Chain[0].NotAfter }

// ChainsTo tells whether the intermediate chains to root; any root does when root is nil
// (unknown).
func (ca *IntermediateCA) ChainsTo(root *x509.Certificate) bool {
	return root == nil || ca.Root.Equal(root)
}

// ParseIssued checks what the root issuer returned for a member's intermediate CSR (where
// names the request): a CA certificate for the CSR's key, with the name constraints the CSR
// asked for, chaining to the root in caPEM. Errors name the fix; they never quote
// certificates.
func ParseIssued(where string, certPEM, caPEM, csrPEM []byte) (*IntermediateCA, error) {
	req, permitted, err := requested(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	chain, err := parseSome(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: the certificate is not valid PEM (%w): the hub requests it again", where, err)
	}
	roots, err := parseSome(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: the issuer reported no valid root CA (%w): the root issuer must be a CA issuer that reports its root", where, err)
	}
	ca := &IntermediateCA{Root: roots[len(roots)-1]}
	// An issuer may end the chain with the root; the chain stops below it.
	for _, c := range chain {
		if !c.Equal(ca.Root) {
			ca.Chain = append(ca.Chain, c)
		}
	}
	if len(ca.Chain) == 0 {
		return nil, fmt.Errorf("%s: the issuer returned only the root", where)
	}
	leaf := ca.Chain[0]
	switch {
	case !leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("%s: the certificate is not a CA (isCA with cert sign usage): the root issuer must sign CA certificates", where)
	case !publicKeysEqual(leaf.PublicKey, req.PublicKey):
		return nil, fmt.Errorf("%s: the certificate is not for the member's key: the hub requests it again", where)
	case len(permitted) == 0 || !slices.Equal(leaf.PermittedURIDomains, permitted):
		return nil, fmt.Errorf("%s: the certificate lost its name constraints (URIs of %q only): use a root issuer that keeps a request's name constraints (cert-manager's CA issuer does)", where, permitted)
	}
	root := x509.NewCertPool()
	root.AddCert(ca.Root)
	if err := VerifyChain(ca.Chain, root, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("%s: the intermediate does not chain to the issuer's root: %w", where, err)
	}
	return ca, nil
}

func publicKeysEqual(a, b any) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// ParseCertificates reads every CERTIFICATE block of PEM data.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(bytes.TrimSpace(data)) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, errors.New("trailing data that is not PEM")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, nil
}

// parseSome is ParseCertificates that also refuses data holding no certificate.
func parseSome(data []byte) ([]*x509.Certificate, error) {
	certs, err := ParseCertificates(data)
	if err == nil && len(certs) == 0 {
		err = errors.New("no certificate")
	}
	return certs, err
}

// VerifyChain checks that chain[0] chains to roots through the rest of chain, for usage.
func VerifyChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// Fingerprint is the SHA-256 of a certificate's DER, in hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Bundle is a set of roots in a stable order, with its PEM and a short version.
type Bundle struct {
	Roots []*x509.Certificate
}

// Add puts a root in the bundle once.
func (b *Bundle) Add(c *x509.Certificate) {
	if !slices.ContainsFunc(b.Roots, c.Equal) {
		b.Roots = append(b.Roots, c)
		slices.SortFunc(b.Roots, func(x, y *x509.Certificate) int { return bytes.Compare(x.Raw, y.Raw) })
	}
}

// PEM encodes the roots.
func (b *Bundle) PEM() []byte { return PEM(b.Roots...) }

// Fingerprints lists the roots' fingerprints.
func (b *Bundle) Fingerprints() []string {
	var out []string
	for _, r := range b.Roots {
		out = append(out, Fingerprint(r))
	}
	return out
}

// Version identifies the bundle's content.
func (b *Bundle) Version() string {
	sum := sha256.Sum256(b.PEM())
	return hex.EncodeToString(sum[:])[:16]
}

// PEM encodes certificates one after the other.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// PublicData is what the hub gives a member: its intermediate's chain, the root and the
// trust bundle, public material only (the intermediate-certs ConfigMap).
func PublicData(ca *IntermediateCA, bundle *Bundle) map[string]string {
	return map[string]string{
		KeyCert:   string(PEM(ca.Chain...)),
		KeyRoot:   string(PEM(ca.Root)),
		KeyBundle: string(bundle.PEM()),
	}
}

// ErrOtherKey says that what the hub signed is for a key the member no longer publishes, or not yet
// for its new one.
var ErrOtherKey = errors.New("the hub's intermediate is not for this member's current key: waiting for the hub to sign its request")

// MemberCACerts is the data of a member's meshfed-cacerts: what the hub signed (public, the
// meshfed-intermediate ConfigMap) with the member's own key. While the hub's intermediate
// is for another key (the member made a new one), the pair held so far stays (held) and
// only the trust bundle follows the hub; with no pair held, that is ErrOtherKey. What the
// hub wrote is checked: an intermediate that does not chain to its root, or a root that
// is not in the bundle, is refused.
func MemberCACerts(public map[string]string, key crypto.Signer, keyPEM []byte, held map[string][]byte) (map[string][]byte, error) {
	bundle, err := parseSome([]byte(public[KeyBundle]))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %s holds no valid PEM certificate (%w): the hub rewrites it on its next pass", IntermediateConfigMap, KeyBundle, err)
	}
	chain, err := parseSome([]byte(public[KeyCert]))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %s holds no valid PEM certificate (%w): the hub rewrites it on its next pass", IntermediateConfigMap, KeyCert, err)
	}
	if !SameKey(chain[0], key) {
		if len(held[KeyCert]) == 0 || len(held[KeyKey]) == 0 {
			return nil, ErrOtherKey
		}
		out := maps.Clone(held)
		out[KeyBundle] = PEM(bundle...)
		return out, nil
	}
	roots, err := parseSome([]byte(public[KeyRoot]))
	if err == nil && len(roots) != 1 {
		err = fmt.Errorf("%d certificates", len(roots))
	}
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %s must hold the one root (%w)", IntermediateConfigMap, KeyRoot, err)
	}
	if !slices.ContainsFunc(bundle, roots[0].Equal) {
		return nil, fmt.Errorf("ConfigMap %s: the intermediate's root is not in the trust bundle", IntermediateConfigMap)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	if err := VerifyChain(chain, pool, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("ConfigMap %s: the intermediate does not chain to its root: %w", IntermediateConfigMap, err)
	}
	return map[string][]byte{
		KeyCert:   PEM(chain...),
		KeyKey:    keyPEM,
		KeyRoot:   PEM(roots[0]),
		KeyChain:  PEM(append(chain, roots[0])...),
		KeyBundle: PEM(bundle...),
	}, nil
}

// CACerts is what a member holds of its meshfed-cacerts Secret.
type CACerts struct {
	Intermediate *x509.Certificate
	Bundle       Bundle
}

// ReadCACerts reads the intermediate and the trust bundle of a member's meshfed-cacerts.
func ReadCACerts(s *corev1.Secret) (*CACerts, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	chain, err := parseSome(s.Data[KeyCert])
	if err != nil {
		return nil, fmt.Errorf("%s: %s holds no valid PEM certificate (%w): the member's operator rewrites it on its next pass", where, KeyCert, err)
	}
	roots, err := parseSome(s.Data[KeyBundle])
	if err != nil {
		return nil, fmt.Errorf("%s: %s holds no valid PEM certificate (%w): the member's operator rewrites it on its next pass", where, KeyBundle, err)
	}
	held := &CACerts{Intermediate: chain[0]}
	for _, r := range roots {
		held.Bundle.Add(r)
	}
	return held, nil
}

// SignedBy tells whether the first certificate of PEM data was issued by ca: signed by its
// key and, when the chain names its issuer, naming ca itself. A member's key may outlive
// a root rotation, so an intermediate under the old root and its successor under the new
// one share a key: only the chain tells which of them issued a certificate.
func SignedBy(certPEM []byte, ca *x509.Certificate) bool {
	chain, err := ParseCertificates(certPEM)
	return err == nil && len(chain) > 0 && chain[0].CheckSignatureFrom(ca) == nil && (len(chain) == 1 || chain[1].Equal(ca))
}
