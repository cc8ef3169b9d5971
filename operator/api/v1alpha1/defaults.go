package v1alpha1

// Defaults of a Mesh that leaves them out (the CRD's defaults, for objects the API server
// did not default, such as those built in tests).
const (
	DefaultTrustDomain = "cluster.local"
	DefaultGatewayPort = 15443
	DefaultXDSPort     = 15010
	// DefaultMeshNamespace is the member namespace that holds meshfed-cacerts, the CA Issuer
	// and workload certificates, unless `meshfedctl join --mesh-namespace` and the member
	// operator's --mesh-namespace name another.
	DefaultMeshNamespace = "meshfed-system"
)

// XDSPortOrDefault is the port the member's xDS server listens on.
func (s *MeshSpec) XDSPortOrDefault() int32 {
	if s.ControlPlane.XDSPort != 0 {
		return s.ControlPlane.XDSPort
	}
	return DefaultXDSPort
}

// GatewayPortOrDefault is the port the member's east-west gateway listens on.
func (s *MeshSpec) GatewayPortOrDefault() int32 {
	if s.EastWestGateway.Port != 0 {
		return s.EastWestGateway.Port
	}
	return DefaultGatewayPort
}

// TrustDomainOrDefault is the trust domain of the member's SPIFFE identities.
func (s *MeshSpec) TrustDomainOrDefault() string {
	if s.TrustDomain != "" {
		return s.TrustDomain
	}
	return DefaultTrustDomain
}
