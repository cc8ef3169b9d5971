package testbed

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// SPIFFEID is the identity of a workload: spiffe://<trustDomain>/ns/<namespace>/sa/<sa>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, namespace, serviceAccount)
}

// WorkloadName names the Certificate (and Secret) of a workload identity in the mesh
// namespace.
func WorkloadName(namespace, serviceAccount string) string {
	name := "spiffe-" + namespace + "-" + serviceAccount
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(namespace + "/" + serviceAccount))
	return name[:50] + "-" + hex.EncodeToString(sum[:])[:12]
}

// WorkloadCertificate is the cert-manager Certificate of one workload identity, issued by the
// member's CA Issuer in meshNamespace: a short-lived ECDSA certificate whose only SAN is
// the SPIFFE URI, good for both ends of mTLS.
func WorkloadCertificate(meshNamespace, trustDomain, namespace, serviceAccount string) *cmapi.Certificate {
	name := WorkloadName(namespace, serviceAccount)
	return &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: meshNamespace, Name: name,
			Labels: map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}},
		Spec: cmapi.CertificateSpec{
			SecretName:  name,
			URIs:        []string{SPIFFEID(trustDomain, namespace, serviceAccount)},
			Duration:    &metav1.Duration{Duration: 24 * time.Hour},
			RenewBefore: &metav1.Duration{Duration: 8 * time.Hour},
			PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
			Usages:      []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageServerAuth, cmapi.UsageClientAuth},
			IssuerRef:   cmmeta.IssuerReference{Name: trust.MemberIssuer, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
		},
	}
}

// Identity is a workload's certificate and the federation's trust bundle as the member
// holds it.
type Identity struct {
	ID          string
	Certificate tls.Certificate
	Leaf        *x509.Certificate
	// Roots is the member's trust bundle (meshfed-cacerts), for verifying peers.
	Roots *x509.CertPool
	// CertPEM (the certificate and the intermediate above it), KeyPEM and BundlePEM are
	// the same as PEM, for workloads that read files.
	CertPEM, KeyPEM, BundlePEM []byte
}

// IssueWorkload asks the member's cert-manager for the identity of namespace/serviceAccount
// and waits until it is issued by the member's intermediate. c must reach the member.
func IssueWorkload(ctx context.Context, c client.Client, meshNamespace, trustDomain, namespace, serviceAccount string, timeout time.Duration) (*Identity, error) {
	want := WorkloadCertificate(meshNamespace, trustDomain, namespace, serviceAccount)
	if err := c.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create Certificate %s/%s: %w", want.Namespace, want.Name, err)
	}
	var id *Identity
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		id, last = ReadWorkload(ctx, c, meshNamespace, namespace, serviceAccount)
		return last == nil && id.ID == want.Spec.URIs[0], nil
	})
	if err != nil {
		return nil, fmt.Errorf("workload certificate %s/%s not issued after %s: %w", want.Namespace, want.Name, timeout, last)
	}
	return id, nil
}

// ReadWorkload reads an issued workload identity and the member's trust bundle.
func ReadWorkload(ctx context.Context, c client.Reader, meshNamespace, namespace, serviceAccount string) (*Identity, error) {
	var s, ca corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: meshNamespace, Name: WorkloadName(namespace, serviceAccount)}, &s); err != nil {
		return nil, err
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: meshNamespace, Name: trust.CACertsSecret}, &ca); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.Data[trust.KeyBundle]) {
		return nil, fmt.Errorf("Secret %s/%s has no trust bundle in %s", ca.Namespace, ca.Name, trust.KeyBundle)
	}
	id := &Identity{Certificate: pair, Leaf: pair.Leaf, Roots: roots,
		CertPEM: s.Data[corev1.TLSCertKey], KeyPEM: s.Data[corev1.TLSPrivateKeyKey], BundlePEM: ca.Data[trust.KeyBundle]}
	if len(pair.Leaf.URIs) == 1 {
		id.ID = pair.Leaf.URIs[0].String()
	}
	return id, nil
}

// TLSConfig is an mTLS configuration for the identity: it presents the workload
// certificate, requires the peer's, verifies the peer's chain against the trust bundle
// and hands the peer's SPIFFE ID to authorize (nil accepts any identity in the bundle).
// SPIFFE certificates carry no DNS names, so the chain is verified here rather than by
// hostname.
func (id *Identity) TLSConfig(server bool, authorize func(peerID string) error) *tls.Config {
	cfg := &tls.Config{
		Certificates:          []tls.Certificate{id.Certificate},
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate: no hostnames in SPIFFE
		VerifyPeerCertificate: id.verifyPeer(server, authorize),
	}
	if server {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.InsecureSkipVerify = false
	}
	return cfg
}

// verifyPeer checks a peer's chain against the trust bundle and its single SPIFFE URI.
func (id *Identity) verifyPeer(server bool, authorize func(peerID string) error) func([][]byte, [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		var chain []*x509.Certificate
		for _, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return err
			}
			chain = append(chain, c)
		}
		if len(chain) == 0 {
			return fmt.Errorf("the peer sent no certificate")
		}
		usage := x509.ExtKeyUsageServerAuth
		if server {
			usage = x509.ExtKeyUsageClientAuth
		}
		if err := trust.VerifyChain(chain, id.Roots, usage); err != nil {
			return fmt.Errorf("peer certificate not trusted by the federation: %w", err)
		}
		if len(chain[0].URIs) != 1 || chain[0].URIs[0].Scheme != "spiffe" {
			return fmt.Errorf("peer certificate has no single SPIFFE URI SAN")
		}
		if authorize != nil {
			return authorize(chain[0].URIs[0].String())
		}
		return nil
	}
}

// IdentitySource keeps a workload identity current: it re-reads the workload certificate and the
// member's trust bundle every interval, so that connections opened after a certificate is
// re-issued or the bundle changes use the new ones. Its TLS configurations always use
// the latest identity it read.
type IdentitySource struct {
	mu  sync.RWMutex
	id  *Identity
	err error
}

// NewIdentitySource reads the identity of namespace/serviceAccount once (it must be issued) and
// then every interval until ctx ends. A failed read keeps the last good identity.
func NewIdentitySource(ctx context.Context, c client.Reader, meshNamespace, namespace, serviceAccount string, interval time.Duration) (*IdentitySource, error) {
	id, err := ReadWorkload(ctx, c, meshNamespace, namespace, serviceAccount)
	if err != nil {
		return nil, err
	}
	s := &IdentitySource{id: id}
	go Every(ctx, interval, func() {
		id, err := ReadWorkload(ctx, c, meshNamespace, namespace, serviceAccount)
		s.mu.Lock()
		if s.err = err; err == nil {
			s.id = id
		}
		s.mu.Unlock()
	})
	return s, nil
}

// Current is the latest identity read.
func (s *IdentitySource) Current() *Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.id
}

// TLSConfig is Identity.TLSConfig for whatever identity is current when a handshake
// begins.
func (s *IdentitySource) TLSConfig(server bool, authorize func(peerID string) error) *tls.Config {
	if server {
		return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.Current().TLSConfig(true, authorize), nil
		}}
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: no hostnames in SPIFFE
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := s.Current().Certificate
			return &c, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			return s.Current().verifyPeer(false, authorize)(raw, chains)
		},
	}
}

// ForgeToken re-signs a service-account token of c with the cluster's own signing key
// after edit changes its claims: a token the API server would have issued, but with (for
// example) an expiry in the past. Tests use it to attack what reviews tokens.
func (c *Cluster) ForgeToken(token string, edit func(claims map[string]any)) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", err
	}
	edit(claims)
	if payload, err = json.Marshal(claims); err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(c.Dir, "sa.key"))
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return "", errors.New("sa.key holds no PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return "", err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return "", fmt.Errorf("sa.key is a %T, not an ECDSA key", parsed)
	}
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64) // ES256: r and s, 32 bytes each
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
