package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
)

// Lifetimes of workload certificates: the default, and the bounds a request must keep.
const (
	DefaultLifetime = time.Hour
	MinLifetime     = time.Minute
	MaxLifetime     = 24 * time.Hour
)

// Refusal is a request the CA service turns down: the HTTP status, a reason a metric
// counts, and a message for the caller (never key material).
type Refusal struct {
	Status  int
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

// Body is the refusal as the caller gets it.
func (r *Refusal) Body() caapi.Refusal { return caapi.Refusal{Reason: r.Reason, Message: r.Message} }

func refuse(status int, reason, format string, args ...any) *Refusal {
	return &Refusal{Status: status, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Caller is the pod a token was issued to.
type Caller struct {
	Namespace, ServiceAccount string
	PodName, PodUID           string
}

// SPIFFEID is the identity the caller may have a certificate for.
func (c Caller) SPIFFEID(trustDomain string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, c.Namespace, c.ServiceAccount)
}

// The user name and extra keys of a pod-bound service-account token in a TokenReview.
const (
	serviceAccountPrefix = "system:serviceaccount:"
	extraPodName         = "authentication.kubernetes.io/pod-name"
	extraPodUID          = "authentication.kubernetes.io/pod-uid"
)

// CallerOf reads the API server's verdict on a token: it must be authenticated, for the
// CA's audience, a service account's, and bound to a pod.
func CallerOf(st authenticationv1.TokenReviewStatus) (Caller, *Refusal) {
	if !st.Authenticated {
		msg := "the token is not valid (expired, revoked, or for another audience)"
		if st.Error != "" {
			msg += ": " + st.Error
		}
		return Caller{}, refuse(http.StatusUnauthorized, "TokenRejected", "%s; mount a projected service-account token with audience %q", msg, caapi.Audience)
	}
	if !slices.Contains(st.Audiences, caapi.Audience) {
		return Caller{}, refuse(http.StatusUnauthorized, "TokenRejected", "the token is not for audience %q", caapi.Audience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, serviceAccountPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || validation.IsDNS1123Label(ns) != nil || validation.IsDNS1123Subdomain(sa) != nil {
		return Caller{}, refuse(http.StatusForbidden, "NotAServiceAccount", "the token belongs to %q, not to a service account", st.User.Username)
	}
	c := Caller{Namespace: ns, ServiceAccount: sa, PodName: first(st.User.Extra[extraPodName]), PodUID: first(st.User.Extra[extraPodUID])}
	if c.PodName == "" || c.PodUID == "" {
		return Caller{}, refuse(http.StatusForbidden, "TokenNotBoundToPod", "the token of %s/%s is not bound to a pod; use a projected token of the pod", ns, sa)
	}
	return c, nil
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// CheckCSR parses a PEM certificate request and checks that it asks for exactly the
// identity want: one URI SAN, no other name, no subject, no extension besides the SANs,
// an accepted key, and a valid signature.
func CheckCSR(data []byte, want string) (*x509.CertificateRequest, *Refusal) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, refuse(http.StatusBadRequest, "MalformedCSR", "csr must be exactly one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "MalformedCSR", "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(http.StatusBadRequest, "MalformedCSR", "csr signature: %v", err)
	}
	if r := checkKey(csr.PublicKey); r != nil {
		return nil, r
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != want {
		got := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			got[i] = u.String()
		}
		return nil, refuse(http.StatusForbidden, "IdentityMismatch", "the CSR asks for %v; the token allows only %s", got, want)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 || len(csr.Subject.Names) > 0 {
		return nil, refuse(http.StatusForbidden, "IdentityMismatch", "the CSR may name nothing but %s (no subject, DNS, IP or email names)", want)
	}
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			return nil, refuse(http.StatusForbidden, "ExtensionNotAllowed", "the CSR asks for extension %s; only subjectAltName is allowed", ext.Id)
		}
	}
	return csr, nil
}

// checkKey accepts ECDSA P-256 and P-384, Ed25519, and RSA of 2048 to 4096 bits.
func checkKey(key any) *Refusal {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return refuse(http.StatusBadRequest, "KeyNotAllowed", "ECDSA curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n >= 2048 && n <= 4096 {
			return nil
		}
		return refuse(http.StatusBadRequest, "KeyNotAllowed", "an RSA key of %d bits is not accepted; use 2048 to 4096", k.N.BitLen())
	}
	return refuse(http.StatusBadRequest, "KeyNotAllowed", "key type %T is not accepted; use ECDSA P-256", key)
}

// Lifetime is the lifetime a request asks for (seconds; 0 for the default), if within
// the bounds.
func Lifetime(seconds int64) (time.Duration, *Refusal) {
	if seconds == 0 {
		return DefaultLifetime, nil
	}
	if seconds < int64(MinLifetime/time.Second) || seconds > int64(MaxLifetime/time.Second) {
		return 0, refuse(http.StatusBadRequest, "LifetimeNotAllowed", "a lifetime of %d s is outside %s to %s", seconds, MinLifetime, MaxLifetime)
	}
	return time.Duration(seconds) * time.Second, nil
}
