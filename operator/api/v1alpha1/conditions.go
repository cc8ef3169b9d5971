package v1alpha1

// Condition types shared by meshfed objects.
const (
	// ConditionReady summarises whether the object does what its spec asks.
	ConditionReady = "Ready"
	// ConditionConnected tells whether the hub can reach a member's API server.
	ConditionConnected = "Connected"
	// ConditionTrustReady tells whether every member holds an intermediate CA under the
	// federation's root (MeshFederation), or whether the member can issue workload
	// certificates (Mesh).
	ConditionTrustReady = "TrustReady"
	// ConditionRootRotation is True while a MeshFederation rotates its root; its reason is
	// the stage and its message the members' progress.
	ConditionRootRotation = "RootRotation"
	// ConditionControlPlaneReady tells whether the member's xDS server serves the
	// configuration its objects describe.
	ConditionControlPlaneReady = "ControlPlaneReady"
	// ConditionGatewayReady tells whether the member's east-west gateway runs and has an
	// address other clusters can use.
	ConditionGatewayReady = "GatewayReady"
)

// Condition reasons shared by meshfed objects.
const (
	// ReasonReconciled means the last reconcile finished without error.
	ReasonReconciled = "Reconciled"
	// ReasonReconcileFailed means the last reconcile failed; the message says why.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonPending means the object has not been reconciled yet.
	ReasonPending = "Pending"
)
