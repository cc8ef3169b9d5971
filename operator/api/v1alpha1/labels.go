package v1alpha1

// Label and annotation keys meshfed reads or writes. They are spelled only here.
const (
	// LabelManagedBy marks every object meshfed writes into a member cluster.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on meshfed's objects.
	ManagedByValue = "meshfed"

	// LabelFederation names the MeshFederation (as <namespace>.<name>) that wrote an object,
	// so that removing a member or the federation finds everything to clean up.
	LabelFederation = "meshfed.io/federation"

	// LabelSourceNetwork carries the network of the cluster an imported endpoint lives in.
	LabelSourceNetwork = "meshfed.io/source-network"

	// EndpointSliceManager is meshfed's value of endpointslice.kubernetes.io/managed-by on
	// the EndpointSlices it imports.
	EndpointSliceManager = "meshfed.io"
	// KubeEndpointSliceManager is the value the EndpointSlice controller of Kubernetes
	// sets there: slices of Services with a selector, holding pod addresses.
	KubeEndpointSliceManager = "endpointslice-controller.k8s.io"

	// FinalizerFederation lets the hub clean every member before a MeshFederation goes.
	FinalizerFederation = "meshfed.io/federation-cleanup"

	// AnnotationTrustBundleVersion on a member's meshfed-cacerts Secret identifies the
	// trust bundle it carries.
	AnnotationTrustBundleVersion = "meshfed.io/trust-bundle-version"

	// LabelMember and LabelRootGeneration tell apart the hub's CertificateRequests for
	// members' intermediates: whose, and under which root generation.
	LabelMember         = "meshfed.io/member"
	LabelRootGeneration = "meshfed.io/root-generation"

	// AnnotationRequestSHA256 on an intermediate's CertificateRequest is the SHA-256 of the
	// member's CSR it carries (hex), so the hub sees when the member asks anew.
	AnnotationRequestSHA256 = "meshfed.io/request-sha256"

	// AnnotationTrafficPolicy on a ServiceImport carries, as JSON, the MeshFederation's
	// TrafficPolicy for the service; the hub writes it, the member's control plane reads it.
	AnnotationTrafficPolicy = "meshfed.io/traffic-policy"

	// AnnotationServiceAccount on a Service pins the service account whose SPIFFE identity
	// its servers must present to clients.
	AnnotationServiceAccount = "meshfed.io/service-account"
)
