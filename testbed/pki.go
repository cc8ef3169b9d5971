package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the certificate authority of one testbed cluster's API server. It signs the
// serving certificate and the client certificates of the admin and the controllers; it has
// nothing to do with meshfed's trust chain, which cert-manager issues.
type pki struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newPKI(commonName string) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &pki{cert: cert, key: key}, nil
}

// issue signs a leaf certificate. Serving certificates get ips and dns names; client
// certificates get the user (CN) and groups (O) the API server authenticates.
func (p *pki) issue(cn string, groups []string, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageClientAuth
	if len(ips)+len(dns) > 0 {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

func (p *pki) certPEM() []byte { return pemBlock("CERTIFICATE", p.cert.Raw) }

// writeServiceAccountKey writes the key pair the API server signs service account tokens with.
func writeServiceAccountKey(dir string) (privPath, pubPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", "", err
	}
	privPath, pubPath = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := writeFiles(map[string][]byte{
		privPath: pemBlock("PRIVATE KEY", privDER),
		pubPath:  pemBlock("PUBLIC KEY", pubDER),
	}); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// WriteServingCert writes tls.crt and tls.key for a TLS server at ip into dir, signed by a
// new CA of its own, and returns that CA's certificate (for a webhook's caBundle).
func WriteServingCert(dir, ip string) (caPEM []byte, err error) {
	ca, err := newPKI("meshfed-testbed serving CA")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.issue(ip, nil, []net.IP{net.ParseIP(ip)}, nil)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(map[string][]byte{filepath.Join(dir, "tls.crt"): certPEM, filepath.Join(dir, "tls.key"): keyPEM}); err != nil {
		return nil, err
	}
	return ca.certPEM(), nil
}
