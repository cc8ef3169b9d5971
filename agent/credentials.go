package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshfed/meshfed/operator/bootstrap"
)

// newKey makes the workload's key: it stays in the pod (memory and the shared volume).
func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// newCSR is a request for id alone: one URI SAN, no subject, no other extension.
func newCSR(key *ecdsa.PrivateKey, id string) ([]byte, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Credentials are what the agent holds and writes for the app.
type Credentials struct {
	Pair      tls.Certificate // the chain (leaf first) and the key
	ChainPEM  []byte
	KeyPEM    []byte
	BundlePEM []byte
	Roots     *x509.CertPool
}

// Leaf is the workload certificate.
func (c *Credentials) Leaf() *x509.Certificate { return c.Pair.Leaf }

// IssuerFingerprint is the SHA-256 of the certificate that signed the leaf (the member's
// intermediate), as the trust-bundle ConfigMap names the current one.
func (c *Credentials) IssuerFingerprint() string {
	if len(c.Pair.Certificate) < 2 {
		return ""
	}
	sum := sha256.Sum256(c.Pair.Certificate[1])
	return hex.EncodeToString(sum[:])
}

// checkCredentials checks what the CA sent against the key, the identity and the bundle.
func checkCredentials(key *ecdsa.PrivateKey, id string, chainPEM, bundlePEM []byte) (*Credentials, error) {
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(chainPEM, kp)
	if err != nil {
		return nil, fmt.Errorf("the CA's certificate does not go with the agent's key: %w", err)
	}
	leaf := pair.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		return nil, fmt.Errorf("the CA's certificate is for %v, not %s", leaf.URIs, id)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		return nil, errors.New("the trust bundle holds no certificate")
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the CA's certificate does not chain to the trust bundle: %w", err)
	}
	return &Credentials{Pair: pair, ChainPEM: chainPEM, KeyPEM: kp, BundlePEM: bundlePEM, Roots: roots}, nil
}

// dataLink is the symlink that names the current generation of files in the credentials
// directory; the files the app reads are links through it, so that one rename replaces
// the certificate, the key and the bundle together (as a kubelet updates a Secret volume).
const dataLink = "..data"

// writeFiles writes files (name → content) into dir as one generation.
func writeFiles(dir string, files map[string][]byte) error {
	gen, err := os.MkdirTemp(dir, ".."+strconv.FormatInt(time.Now().UnixNano(), 10)+".")
	if err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(gen, name), data, 0o640); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, dataLink+".tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return err
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataLink, name), link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(gen) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// writeCredentials writes the files grpc-go's file_watcher reads.
func writeCredentials(dir string, c *Credentials) error {
	return writeFiles(dir, map[string][]byte{
		bootstrap.CertFile: c.ChainPEM, bootstrap.KeyFile: c.KeyPEM, bootstrap.BundleFile: c.BundlePEM,
	})
}
