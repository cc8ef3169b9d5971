package v1alpha1

// Condition types, and the reasons each can carry. Every condition and reason meshfed
// writes is named here, once.

// Conditions shared by meshfed objects, and their shared reasons.
const (
	// ConditionReady summarises whether the object does what its spec asks.
	ConditionReady = "Ready"

	// ReasonReconciled means the last reconcile finished without error.
	ReasonReconciled = "Reconciled"
	// ReasonReconcileFailed means the last reconcile failed; the message says why.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonPending means the object has not been reconciled yet.
	ReasonPending = "Pending"
	// ReasonInvalidSpec marks an object the checks refuse (possible when the webhook is
	// not installed); the message lists what to fix.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonMembersNotConnected: a MeshFederation's members are not all connected and
	// synced; the message names them.
	ReasonMembersNotConnected = "MembersNotConnected"
	// ReasonSyncFailed: the hub could not write a MeshFederation's objects into a member.
	ReasonSyncFailed = "SyncFailed"
)

// ConditionConnected tells whether the hub can reach a member's API server (on the
// MeshPeer the hub writes for it).
const (
	ConditionConnected = "Connected"

	ReasonConnected    = "Connected"
	ReasonDisconnected = "Disconnected"
	// ReasonWithdrawn: the member stayed unreachable past the grace period and its
	// endpoints were withdrawn from the other members.
	ReasonWithdrawn = "Withdrawn"
)

// ConditionTrustReady tells whether every member holds an intermediate CA under the
// federation's root (MeshFederation), or whether the member can issue workload
// certificates (Mesh).
const (
	ConditionTrustReady = "TrustReady"

	// ReasonWaitingForHub: the member has no intermediate CA from the hub yet.
	ReasonWaitingForHub = "WaitingForHub"
	// ReasonIssuerNotFound: the root issuer a MeshFederation names does not exist.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonIssuerNotReady: cert-manager has not reported an issuer ready (the
	// federation's root issuer, or a member's CA Issuer).
	ReasonIssuerNotReady = "IssuerNotReady"
	// ReasonIntermediatePending: a member's intermediate CA is not issued yet.
	ReasonIntermediatePending = "IntermediatePending"
	// ReasonInvalidCertificate: an issued certificate does not verify.
	ReasonInvalidCertificate = "InvalidCertificate"
	// ReasonIntermediateExpiring: an intermediate CA was not renewed in its window.
	ReasonIntermediateExpiring = "IntermediateExpiring"
)

// ConditionRootRotation is True while a MeshFederation rotates its root; its reason is the
// stage and its message the members' progress. The reasons are also those of the
// rotation's Events.
const (
	ConditionRootRotation = "RootRotation"

	ReasonNoRotation        = "NoRotation"
	ReasonRotationStarted   = "RotationStarted"
	ReasonRotationStage     = "RotationStage"
	ReasonRotationCompleted = "RotationCompleted"
	ReasonRotationCanceled  = "RotationCanceled"
	ReasonRotationAborting  = "RotationAborting"
	ReasonRotationAborted   = "RotationAborted"
	ReasonRotationPaused    = "RotationPaused"
)

// ConditionControlPlaneReady tells whether the member's xDS server serves the
// configuration its objects describe.
const (
	ConditionControlPlaneReady = "ControlPlaneReady"

	// ReasonServing: the xDS server serves the configuration of the member's objects.
	ReasonServing = "Serving"
	// ReasonConfigNotServed: the configuration built from the objects failed its checks;
	// proxies keep the last one served.
	ReasonConfigNotServed = "ConfigNotServed"
)

// ConditionGatewayReady tells whether the member's east-west gateway runs and has an
// address other clusters can use.
const (
	ConditionGatewayReady = "GatewayReady"

	ReasonGatewayDisabled    = "Disabled"
	ReasonGatewayUnavailable = "Unavailable"
	ReasonNoAddress          = "NoAddress"
)

// ConditionDNSReady tells whether meshfed-dns answers clusterset.local: its Deployment
// has a ready replica (ready once it holds the cluster's imports) behind its Service.
const (
	ConditionDNSReady = "DNSReady"

	ReasonDNSDisabled    = "Disabled"
	ReasonDNSUnavailable = "Unavailable"
)

// ConditionAccepted tells whether a ServicePolicy applies: every target it names exists.
const (
	ConditionAccepted    = "Accepted"
	ReasonAccepted       = "Accepted"
	ReasonTargetNotFound = "TargetNotFound"
)

// ReasonIntermediateRotated is the reason of the Issuing condition the member sets on a
// workload Certificate (cert-manager's) to have it re-issued under a new intermediate.
const ReasonIntermediateRotated = "IntermediateRotated"

// Reasons of Events that no condition carries.
const (
	EventMemberConnected      = "MemberConnected"
	EventMemberDisconnected   = "MemberDisconnected"
	EventMemberConfigInvalid  = "MemberConfigInvalid"
	EventMemberRemoved        = "MemberRemoved"
	EventMemberCleanupSkipped = "MemberCleanupSkipped"
	EventMemberCleanupPending = "MemberCleanupPending"
	// EventTokenRenewed and EventTokenRenewalFailed: the hub renewed (or could not renew)
	// its token for a member.
	EventTokenRenewed       = "TokenRenewed"
	EventTokenRenewalFailed = "TokenRenewalFailed"
	// EventInvalidCACerts: the member's meshfed-cacerts Secret does not parse.
	EventInvalidCACerts = "InvalidCACerts"
)

// ConditionClusterSetIPsReady tells whether every ClusterSetIP service imported here holds
// its ClusterSet IPs (spec.clusterSetIPs.ranges).
const (
	ConditionClusterSetIPsReady = "ClusterSetIPsReady"

	ReasonAllocated = "Allocated"
	// ReasonRangeExhausted: a range has no free address left for a service.
	ReasonRangeExhausted = "RangeExhausted"
	// ReasonNoRange: a service asks for an IP family the Mesh gives no range for.
	ReasonNoRange = "NoRange"
)

// ConditionInjectionReady tells whether pods can join the mesh: the injection webhook
// follows the Mesh's selector, the CA service has its certificate, and every namespace
// has the trust bundle.
const (
	ConditionInjectionReady = "InjectionReady"

	// ReasonWaitingForCertificate: cert-manager has not issued the control plane's
	// serving certificate yet.
	ReasonWaitingForCertificate = "WaitingForCertificate"
	// ReasonWebhookMissing: the MutatingWebhookConfiguration of config/default is missing.
	ReasonWebhookMissing = "WebhookMissing"
)
