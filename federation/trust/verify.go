package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// IntermediateCA is a member's intermediate CA as cert-manager issued it, checked.
type IntermediateCA struct {
	// Chain is the intermediate followed by any CA up to (not including) the root.
	Chain []*x509.Certificate
	// Root is the root it chains to.
	Root *x509.Certificate
	// CertPEM, KeyPEM and RootPEM are the Secret's bytes.
	CertPEM, KeyPEM, RootPEM []byte
}

// NotAfter is when the intermediate expires.
func (ca *IntermediateCA) NotAfter() time.Time { return ca.Chain[0].NotAfter }

// ParseIntermediate checks the Secret cert-manager wrote for an intermediate Certificate:
// a CA certificate whose key matches, chaining to the root in ca.crt. Errors name the
// Secret and the fix; they never quote key material.
func ParseIntermediate(s *corev1.Secret) (*IntermediateCA, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	chain, err := ParseCertificates(s.Data[corev1.TLSCertKey])
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("%s: %s holds no valid PEM certificate (%w): delete the Secret so cert-manager issues it again", where, corev1.TLSCertKey, err)
	}
	roots, err := ParseCertificates(s.Data["ca.crt"])
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("%s: ca.crt holds no valid PEM certificate (%w): the issuer must be a CA issuer that reports its root", where, err)
	}
	if _, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return nil, fmt.Errorf("%s: the private key does not match the certificate or does not parse: delete the Secret so cert-manager issues it again", where)
	}
	ca := &IntermediateCA{Root: roots[len(roots)-1], CertPEM: s.Data[corev1.TLSCertKey], KeyPEM: s.Data[corev1.TLSPrivateKeyKey], RootPEM: s.Data["ca.crt"]}
	// cert-manager may end tls.crt with the root; the chain stops below it.
	for _, c := range chain {
		if !c.Equal(ca.Root) {
			ca.Chain = append(ca.Chain, c)
		}
	}
	if len(ca.Chain) == 0 {
		return nil, fmt.Errorf("%s: tls.crt holds only the root: the Certificate must be issued by the root issuer, not be the root", where)
	}
	if !ca.Chain[0].IsCA || ca.Chain[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: the certificate is not a CA (isCA with cert sign usage): set isCA: true on its Certificate", where)
	}
	root := x509.NewCertPool()
	root.AddCert(ca.Root)
	if err := VerifyChain(ca.Chain, root, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("%s: the intermediate does not chain to its ca.crt: %w", where, err)
	}
	return ca, nil
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
func (b *Bundle) PEM() []byte {
	var out []byte
	for _, r := range b.Roots {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return out
}

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

// MemberSecretData is the content of a member's meshfed-cacerts Secret.
func MemberSecretData(ca *IntermediateCA, bundle *Bundle) map[string][]byte {
	var chain []byte
	for _, c := range ca.Chain {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	full := append(slices.Clone(chain), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})...)
	return map[string][]byte{
		KeyCert:   chain,
		KeyKey:    ca.KeyPEM,
		KeyRoot:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}),
		KeyChain:  full,
		KeyBundle: bundle.PEM(),
	}
}

// CACerts is what a member holds of its meshfed-cacerts Secret.
type CACerts struct {
	Intermediate *x509.Certificate
	Bundle       Bundle
}

// ReadCACerts reads the intermediate and the trust bundle of a member's meshfed-cacerts.
func ReadCACerts(s *corev1.Secret) (*CACerts, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	chain, err := ParseCertificates(s.Data[KeyCert])
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("%s: %s holds no valid PEM certificate (%w): the hub rewrites it on its next pass", where, KeyCert, err)
	}
	roots, err := ParseCertificates(s.Data[KeyBundle])
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("%s: %s holds no valid PEM certificate (%w): the hub rewrites it on its next pass", where, KeyBundle, err)
	}
	held := &CACerts{Intermediate: chain[0]}
	for _, r := range roots {
		held.Bundle.Add(r)
	}
	return held, nil
}

// SignedBy tells whether the first certificate of PEM data was signed by ca.
func SignedBy(certPEM []byte, ca *x509.Certificate) bool {
	chain, err := ParseCertificates(certPEM)
	return err == nil && len(chain) > 0 && chain[0].CheckSignatureFrom(ca) == nil
}
