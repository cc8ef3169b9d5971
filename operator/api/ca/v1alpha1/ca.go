// Package v1alpha1 is the wire format of the member operator's CA service: what
// meshfed-agent sends to get a workload certificate, and what it gets back. The service is
// HTTPS (its certificate is issued by the member's CA and checked against the federation's
// trust bundle), JSON in and out, authenticated by a projected service-account token.
package v1alpha1

const (
	// Path is where a SignRequest is POSTed.
	Path = "/v1alpha1/certificates"
	// Audience is the audience of the service-account token the agent presents as
	// "Authorization: Bearer <token>"; a token for any other audience is refused.
	Audience = "meshfed-ca"
	// Port is the CA service's port (on the operator pods and its Service).
	Port = 15012
	// ServiceName is the CA service's Service in the operator's namespace.
	ServiceName = "meshfed-ca"
	// TrustBundleConfigMap is the ConfigMap the member operator keeps in every namespace:
	// an agent trusts the CA service through it and re-issues when the intermediate in it
	// changes.
	TrustBundleConfigMap = "meshfed-trust-bundle"
	// TrustBundleKey holds the federation's trust bundle (PEM).
	TrustBundleKey = "ca.pem"
	// IntermediateKey holds the SHA-256 fingerprint of the intermediate CA that signs now.
	IntermediateKey = "intermediate-sha256"
)

// SignRequest asks for a certificate for the caller's own SPIFFE ID.
type SignRequest struct {
	// CSR is a PEM CERTIFICATE REQUEST whose only name is one URI SAN, the caller's SPIFFE
	// ID (spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>).
	CSR string `json:"csr"`
	// LifetimeSeconds is the lifetime asked for; 0 takes the service's default. Outside
	// the service's bounds the request is refused.
	LifetimeSeconds int64 `json:"lifetimeSeconds,omitempty"`
}

// SignResponse is a signed certificate.
type SignResponse struct {
	// CertChain is PEM: the workload certificate, then the intermediate CA.
	CertChain string `json:"certChain"`
	// TrustBundle is PEM: every root the federation trusts now.
	TrustBundle string `json:"trustBundle"`
}

// Refusal is the body of a 4xx answer.
type Refusal struct {
	// Reason is one word a metric counts (e.g. TokenRejected, IdentityMismatch).
	Reason string `json:"reason"`
	// Message says what was wrong and what to do.
	Message string `json:"message"`
}
