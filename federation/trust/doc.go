// Package trust describes the federation's certificates as cert-manager objects and checks
// what cert-manager issued: a root (the user's issuer, or a self-signed one meshfed
// bootstraps), one intermediate CA per member, the meshfed-cacerts Secret each member gets,
// and the SPIFFE workload certificates a member issues from its intermediate. Signing is
// always cert-manager's; this package only names, parses and verifies.
package trust
