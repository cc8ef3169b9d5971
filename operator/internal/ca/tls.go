package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/trust"
)

// TLSSource gives the control plane's servers (the CA service, the xDS server) their
// serving certificate and the federation's trust bundle, from the Secrets in the mesh
// namespace (read from the cache, parsed again only when they change).
type TLSSource struct {
	Client    client.Reader
	Namespace string

	mu        sync.Mutex
	serving   *tls.Certificate
	servingRV string
	roots     *x509.CertPool
	rootsRV   string
}

// Certificate is the serving certificate (tls.Config.GetCertificate).
func (s *TLSSource) Certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var secret corev1.Secret
	if err := s.Client.Get(hello.Context(), client.ObjectKey{Namespace: s.Namespace, Name: ServingSecret}, &secret); err != nil {
		return nil, fmt.Errorf("no serving certificate yet (Secret %s/%s): %w", s.Namespace, ServingSecret, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving != nil && s.servingRV == secret.ResourceVersion {
		return s.serving, nil
	}
	pair, err := tls.X509KeyPair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", s.Namespace, ServingSecret, err)
	}
	s.serving, s.servingRV = &pair, secret.ResourceVersion
	return s.serving, nil
}

// Roots is the federation's trust bundle now.
func (s *TLSSource) Roots(ctx context.Context) (*x509.CertPool, error) {
	var secret corev1.Secret
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: trust.CACertsSecret}, &secret); err != nil {
		return nil, fmt.Errorf("no trust bundle yet (Secret %s/%s): %w", s.Namespace, trust.CACertsSecret, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.roots != nil && s.rootsRV == secret.ResourceVersion {
		return s.roots, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data[trust.KeyBundle]) {
		return nil, fmt.Errorf("Secret %s/%s holds no trust bundle", s.Namespace, trust.CACertsSecret)
	}
	s.roots, s.rootsRV = roots, secret.ResourceVersion
	return roots, nil
}

// VerifyClient checks a TLS client's chain against the trust bundle now (for clientAuth)
// and returns its SPIFFE ID.
func (s *TLSSource) VerifyClient(ctx context.Context, cs tls.ConnectionState) (*url.URL, error) {
	roots, err := s.Roots(ctx)
	if err != nil {
		return nil, err
	}
	return VerifyClient(cs, roots)
}

// VerifyClient checks a TLS client's chain against roots (for clientAuth) and returns its
// SPIFFE ID: the one URI SAN of its certificate.
func VerifyClient(cs tls.ConnectionState, roots *x509.CertPool) (*url.URL, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate: the xDS server needs a certificate of the federation")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the client certificate is not of this federation: %w", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" || !strings.HasPrefix(leaf.URIs[0].Path, "/") {
		return nil, fmt.Errorf("the client certificate names %v, not one SPIFFE ID", leaf.URIs)
	}
	return leaf.URIs[0], nil
}
