// Package trust describes the federation's certificates as cert-manager objects and checks
// what cert-manager issued: a root (the user's issuer, or a self-signed one meshfed
// bootstraps), one intermediate CA per member, the meshfed-cacerts Secret each member gets,
// and whether a workload certificate was signed by the member's current intermediate. It
// also plans root rotations (rotation.go), as pure functions of the federation's state.
//
// Signing is always cert-manager's; this package only names, parses, verifies and plans.
// It reads no API server: the hub and member controllers do, and hand it what they read.
package trust
