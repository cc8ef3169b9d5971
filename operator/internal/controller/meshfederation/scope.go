package meshfederation

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/meshfed/meshfed/federation/clusters"
	"github.com/meshfed/meshfed/federation/mcs"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// scope is the state of one reconcile of one federation.
type scope struct {
	fed   *meshv1.MeshFederation
	owner string // namespace/name, the registry's owner key
	label string // value of meshfed.io/federation on what this federation writes

	members []*memberView
	byName  map[string]*memberView
	// leaving are the members removed from the spec that are not cleaned yet.
	leaving []meshv1.LeavingMember

	// incomplete is set while a member's exports are unknown (not synced since the hub
	// started): no import or endpoint may be deleted then, since that member may export it.
	incomplete bool
	// sources and withdrawn feed the EndpointSlice mirroring.
	sources   map[string]mcs.Source
	withdrawn map[string]bool
	// unknown members have not synced since the hub started, past the grace period: the
	// imports that list them stay, since they may still export those services.
	unknown map[string]bool
	agg     mcs.Result
	// exportPolicy decides which exports count.
	exportPolicy mcs.Policy
	// policies are the traffic policies, as the JSON the members read, by service.
	policies map[mcs.ServiceKey]string
	trust    trustView
	// requeueAfter asks for a pass when a grace period ends.
	requeueAfter time.Duration
}

// memberView is what one reconcile knows of one member.
type memberView struct {
	spec   meshv1.Member
	member *clusters.Member
	state  clusters.State
	// err says why the member cannot be used (Secret, kubeconfig, connection).
	err error
	// usable members are connected and synced: the reconcile writes into them.
	usable bool
	// known members have synced once: their cached exports count, even while away.
	known     bool
	withdrawn bool
	mesh      *meshv1.Mesh
	exports   []exportView

	imported          int32
	pendingNamespaces []string
	syncErr           error
	synced            bool
}

func newScope(fed *meshv1.MeshFederation, owner string) *scope {
	return &scope{
		fed:          fed,
		owner:        owner,
		exportPolicy: mcs.Policy{Federation: owner, AllowedNamespaces: fed.Spec.ExportPolicy.AllowedNamespaces},
		label:        federationLabel(fed.Namespace, fed.Name),
		byName:       map[string]*memberView{},
		sources:      map[string]mcs.Source{},
		withdrawn:    map[string]bool{},
		unknown:      map[string]bool{},
	}
}

// federationLabel is "<namespace>.<name>", shortened with a hash when it would exceed the
// 63 characters of a label value.
func federationLabel(namespace, name string) string {
	v := namespace + "." + name
	if len(v) <= 63 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return v[:50] + "-" + hex.EncodeToString(sum[:])[:12]
}
