// Package ca is the member operator's CA service: meshfed-agent sends it a CSR for its
// pod's SPIFFE ID with a projected service-account token; the service has the API server
// review the token (audience, expiry, the pod it is bound to), checks that the CSR asks
// for that identity and nothing else, and has cert-manager sign it through a
// CertificateRequest against the member's CA Issuer, as cert-manager's istio-csr does.
// The checks are pure functions (check.go) with table tests; the service is tested on the
// testbed with real tokens, pods and cert-manager.
package ca
