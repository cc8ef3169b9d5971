package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net/url"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
)

const want = "spiffe://cluster.local/ns/shop/sa/echo"

func csrPEM(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func uris(t *testing.T, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func TestCheckCSRAcceptsOnlyTheTokensIdentity(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	good := csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, want)})
	tampered := []byte(string(good))
	// A CSR signed by one key that carries another's public key fails its signature.
	other := csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, "spiffe://cluster.local/ns/shop/sa/other")})
	block, _ := pem.Decode(other)
	block.Bytes[len(block.Bytes)-5] ^= 0xff
	badSig := pem.EncodeToMemory(block)

	for _, tc := range []struct {
		name   string
		csr    []byte
		reason string
	}{
		{"the pod's own identity", good, ""},
		{"another service account", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, "spiffe://cluster.local/ns/shop/sa/admin")}), "IdentityMismatch"},
		{"another trust domain", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, "spiffe://evil.example/ns/shop/sa/echo")}), "IdentityMismatch"},
		{"two identities", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, want, "spiffe://cluster.local/ns/kube-system/sa/admin")}), "IdentityMismatch"},
		{"no identity", csrPEM(t, p256, &x509.CertificateRequest{DNSNames: []string{"echo.shop.svc"}}), "IdentityMismatch"},
		{"a DNS name beside it", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, want), DNSNames: []string{"kubernetes.default.svc"}}), "IdentityMismatch"},
		{"a common name", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, want), Subject: pkix.Name{CommonName: "admin"}}), "IdentityMismatch"},
		{"a CA extension", csrPEM(t, p256, &x509.CertificateRequest{URIs: uris(t, want), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}}}), "ExtensionNotAllowed"},
		{"a P-224 key", csrPEM(t, p224, &x509.CertificateRequest{URIs: uris(t, want)}), "KeyNotAllowed"},
		{"a 1024-bit RSA key", csrPEM(t, rsa1024, &x509.CertificateRequest{URIs: uris(t, want)}), "KeyNotAllowed"},
		{"a broken signature", badSig, "MalformedCSR"},
		{"not PEM", []byte("hello"), "MalformedCSR"},
		{"a certificate, not a request", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), "MalformedCSR"},
		{"two requests", append(append([]byte{}, good...), tampered...), "MalformedCSR"},
		{"garbage in the block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x82, 0xff}}), "MalformedCSR"},
	} {
		_, r := CheckCSR(tc.csr, want)
		got := ""
		if r != nil {
			got = r.Reason
		}
		if got != tc.reason {
			t.Errorf("%s: refusal %q (%v), want %q", tc.name, got, r, tc.reason)
		}
	}
}

func TestCallerOfNeedsAPodBoundServiceAccountTokenForTheCA(t *testing.T) {
	bound := authenticationv1.UserInfo{Username: "system:serviceaccount:shop:echo",
		Extra: map[string]authenticationv1.ExtraValue{extraPodName: {"echo-0"}, extraPodUID: {"uid-1"}}}
	for _, tc := range []struct {
		name   string
		status authenticationv1.TokenReviewStatus
		reason string
	}{
		{"a pod's token", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{caapi.Audience}, User: bound}, ""},
		{"expired or forged", authenticationv1.TokenReviewStatus{Authenticated: false, Error: "token has expired"}, "TokenRejected"},
		{"another audience", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: bound}, "TokenRejected"},
		{"a user, not a service account", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{caapi.Audience},
			User: authenticationv1.UserInfo{Username: "alice", Extra: bound.Extra}}, "NotAServiceAccount"},
		{"a malformed service account", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{caapi.Audience},
			User: authenticationv1.UserInfo{Username: "system:serviceaccount:../kube-system:x", Extra: bound.Extra}}, "NotAServiceAccount"},
		{"not bound to a pod", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{caapi.Audience},
			User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:echo"}}, "TokenNotBoundToPod"},
	} {
		c, r := CallerOf(tc.status)
		got := ""
		if r != nil {
			got = r.Reason
		}
		if got != tc.reason {
			t.Errorf("%s: refusal %q (%v), want %q", tc.name, got, r, tc.reason)
		}
		if tc.reason == "" && c.SPIFFEID("cluster.local") != want {
			t.Errorf("%s: identity %s, want %s", tc.name, c.SPIFFEID("cluster.local"), want)
		}
	}
}

func TestLifetimeBounds(t *testing.T) {
	for _, tc := range []struct {
		seconds int64
		want    time.Duration
		ok      bool
	}{
		{0, DefaultLifetime, true}, {60, time.Minute, true}, {86400, 24 * time.Hour, true},
		{59, 0, false}, {86401, 0, false}, {-1, 0, false}, {1 << 62, 0, false},
	} {
		d, r := Lifetime(tc.seconds)
		if (r == nil) != tc.ok || d != tc.want {
			t.Errorf("Lifetime(%d) = %s, %v; want %s, ok=%v", tc.seconds, d, r, tc.want, tc.ok)
		}
	}
}
