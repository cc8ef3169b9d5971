package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// MaxRequestBytes bounds a member's intermediate CSR as the hub reads it.
const MaxRequestBytes = 8 << 10

// IntermediateSubject is the common name of a member's intermediate CA.
func IntermediateSubject(member string) string { return "meshfed intermediate " + member }

// NewIntermediateKey makes a member's intermediate CA key (ECDSA P-256).
func NewIntermediateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// IntermediateCSR is the PEM CSR a member publishes for its intermediate CA: a CA with
// a path length of 0 that may only name SPIFFE IDs of trustDomain.
func IntermediateCSR(key crypto.Signer, member, trustDomain string) ([]byte, error) {
	zero := 0
	basic, err := pki.MarshalBasicConstraints(true, &zero)
	if err != nil {
		return nil, err
	}
	basic.Critical = true
	names, err := pki.MarshalNameConstraints(&pki.NameConstraints{PermittedURIDomains: []string{trustDomain}}, true)
	if err != nil {
		return nil, err
	}
	usage, err := pki.MarshalKeyUsage(caKeyUsage)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: IntermediateSubject(member)},
		ExtraExtensions: []pkix.Extension{basic, names, usage},
	}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

const caKeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature

// CheckIntermediateRequest checks a member's published CSR before the hub has it signed:
// the member is not trusted to ask for more than its own intermediate. It must be one
// signed CSR for exactly IntermediateSubject(member), with no SAN, a CA basic constraint of
// path length 0, name constraints permitting only URIs of trustDomain, and a key of a
// usual kind and size. Errors say what is wrong; they never quote the request.
func CheckIntermediateRequest(data []byte, member, trustDomain string) (*x509.CertificateRequest, error) {
	if len(data) > MaxRequestBytes {
		return nil, fmt.Errorf("the request is %d bytes, more than %d", len(data), MaxRequestBytes)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(rest) != 0 {
		return nil, errors.New("the request is not exactly one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request's signature does not verify: %w", err)
	}
	if err := checkCAKey(csr.PublicKey); err != nil {
		return nil, err
	}
	want := IntermediateSubject(member)
	if csr.Subject.CommonName != want || len(csr.Subject.Names) != 1 {
		return nil, fmt.Errorf("the request's subject must be only CN=%q", want)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) > 0 {
		return nil, errors.New("the request names subject alternative names: an intermediate has none")
	}
	var basic, names bool
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(pki.OIDExtensionBasicConstraints):
			isCA, pathLen, err := pki.UnmarshalBasicConstraints(ext.Value)
			if err != nil || !isCA || pathLen == nil || *pathLen != 0 {
				return nil, errors.New("the request's basic constraints must be CA with a path length of 0")
			}
			basic = true
		case ext.Id.Equal(pki.OIDExtensionNameConstraints):
			nc, err := pki.UnmarshalNameConstraints(ext.Value)
			if err != nil || !ext.Critical || !slices.Equal(nc.PermittedURIDomains, []string{trustDomain}) ||
				len(nc.PermittedDNSDomains)+len(nc.PermittedIPRanges)+len(nc.PermittedEmailAddresses) > 0 {
				return nil, fmt.Errorf("the request's name constraints must be critical and permit only URIs of the trust domain %q", trustDomain)
			}
			names = true
		case ext.Id.Equal(pki.OIDExtensionKeyUsage):
			usage, err := pki.UnmarshalKeyUsage(ext.Value)
			if err != nil || usage != caKeyUsage {
				return nil, errors.New("the request's key usage must be exactly cert sign, CRL sign and digital signature")
			}
		default:
			return nil, fmt.Errorf("the request carries extension %s: an intermediate asks for basic constraints, name constraints and key usage only", ext.Id)
		}
	}
	if !basic || !names {
		return nil, errors.New("the request lacks its basic constraints or its name constraints")
	}
	return csr, nil
}

// checkCAKey accepts ECDSA P-256/P-384, Ed25519 and RSA 2048–4096 keys.
func checkCAKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n >= 2048 && n <= 4096 {
			return nil
		}
	}
	return errors.New("the request's key must be ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 4096 bits")
}

// requested reads a CSR the hub had signed, and the URI domains it asked to be limited to.
func requested(csrPEM []byte) (*x509.CertificateRequest, []string, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, nil, errors.New("the request is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("the request does not parse: %w", err)
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(pki.OIDExtensionNameConstraints) {
			nc, err := pki.UnmarshalNameConstraints(ext.Value)
			if err != nil {
				return nil, nil, fmt.Errorf("the request's name constraints do not parse: %w", err)
			}
			return csr, nc.PermittedURIDomains, nil
		}
	}
	return csr, nil, nil
}

// SameKey tells whether a certificate is for the public key of signer.
func SameKey(cert *x509.Certificate, signer crypto.Signer) bool {
	return publicKeysEqual(signer.Public(), cert.PublicKey)
}

// RequestFor tells whether a PEM CSR is for signer's key.
func RequestFor(csrPEM []byte, signer crypto.Signer) bool {
	csr, _, err := requested(csrPEM)
	return err == nil && publicKeysEqual(signer.Public(), csr.PublicKey)
}
