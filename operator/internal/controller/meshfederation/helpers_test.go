package meshfederation

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/clusters"
	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Table tests of the hub's pure helpers: what each decides from a scope, without an API
// server (the integration tests run the same helpers on the testbed).

var cart = mcs.ServiceKey{Namespace: "shop", Name: "cart"}

func condition(conds []metav1.Condition, typ mcsv1beta1.ServiceExportConditionType) metav1.Condition {
	for _, c := range conds {
		if c.Type == string(typ) {
			return c
		}
	}
	return metav1.Condition{}
}

func TestExportConditions(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	external := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName}}
	cases := []struct {
		name                   string
		service                *corev1.Service
		valid, ready, conflict metav1.ConditionStatus
		reason                 string // of Valid, or of Conflict when there is one
		message                string // in Ready's message
		allowed                []string
	}{
		{name: "an export without its Service is invalid and not ready", valid: metav1.ConditionFalse, ready: metav1.ConditionFalse,
			conflict: metav1.ConditionFalse, reason: string(mcsv1beta1.ServiceExportReasonNoService), message: "create it"},
		{name: "an ExternalName Service cannot be exported", service: external, valid: metav1.ConditionFalse, ready: metav1.ConditionFalse,
			conflict: metav1.ConditionFalse, reason: string(mcsv1beta1.ServiceExportReasonInvalidServiceType), message: "ClusterIP or headless"},
		{name: "an export from a namespace the export policy does not list is refused", service: svc, allowed: []string{"pay"},
			valid: metav1.ConditionFalse, ready: metav1.ConditionFalse, conflict: metav1.ConditionFalse,
			reason: string(mcs.ReasonNamespaceNotAllowed), message: "not in spec.exportPolicy.allowedNamespaces of MeshFederation meshfed-system/global"},
		{name: "a valid export names the exporting clusters", service: svc, valid: metav1.ConditionTrue, ready: metav1.ConditionTrue,
			conflict: metav1.ConditionFalse, reason: string(mcsv1beta1.ServiceExportReasonValid), message: "exported by [a b]"},
		{name: "a conflict is reported on a valid export", service: svc, valid: metav1.ConditionTrue, ready: metav1.ConditionTrue,
			conflict: metav1.ConditionTrue, reason: string(mcsv1beta1.ServiceExportReasonPortConflict), message: "exported by [a b]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fed := &meshv1.MeshFederation{Spec: meshv1.MeshFederationSpec{ExportPolicy: meshv1.ExportPolicy{AllowedNamespaces: tc.allowed}}}
			s := newScope(fed, "meshfed-system/global")
			s.agg = mcs.Result{Imports: map[mcs.ServiceKey]*mcs.Import{cart: {Key: cart, Clusters: []string{"a", "b"}}},
				Conflicts: map[mcs.ServiceKey]mcs.Conflict{}}
			if tc.conflict == metav1.ConditionTrue {
				s.agg.Conflicts[cart] = mcs.Conflict{Reason: mcsv1beta1.ServiceExportReasonPortConflict, Message: "ports differ"}
			}
			conds := exportConditions(exportView{export: mcs.Export{Cluster: "a", Key: cart, Service: tc.service}}, s)
			valid := condition(conds, mcsv1beta1.ServiceExportConditionValid)
			ready := condition(conds, mcsv1beta1.ServiceExportConditionReady)
			conflict := condition(conds, mcsv1beta1.ServiceExportConditionConflict)
			if valid.Status != tc.valid || ready.Status != tc.ready || conflict.Status != tc.conflict {
				t.Fatalf("Valid %s, Ready %s, Conflict %s; want %s, %s, %s", valid.Status, ready.Status, conflict.Status, tc.valid, tc.ready, tc.conflict)
			}
			reason := valid.Reason
			if tc.conflict == metav1.ConditionTrue {
				reason = conflict.Reason
			}
			if reason != tc.reason {
				t.Errorf("reason %s, want %s", reason, tc.reason)
			}
			if !strings.Contains(ready.Message, tc.message) {
				t.Errorf("Ready says %q, want it to contain %q", ready.Message, tc.message)
			}
		})
	}
}

func TestPeerFor(t *testing.T) {
	mesh := &meshv1.Mesh{Spec: meshv1.MeshSpec{Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "eu"},
		EastWestGateway: meshv1.GatewaySpec{Port: 15443}}, Status: meshv1.MeshStatus{GatewayAddress: "198.51.100.2"}}
	advertised := mesh.DeepCopy()
	advertised.Spec.EastWestGateway.AdvertisedAddress = "203.0.113.2"
	connected := clusters.State{Connected: true}
	cases := []struct {
		name    string
		mv      *memberView
		want    meshv1.MeshPeerSpec
		reason  string
		message string
	}{
		{name: "a connected member: its Mesh's network, trust domain, locality and gateway",
			mv:     &memberView{spec: meshv1.Member{Name: "b"}, mesh: mesh, state: connected},
			want:   meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "eu"}, GatewayAddress: "198.51.100.2", GatewayPort: 15443},
			reason: meshv1.ReasonConnected},
		{name: "an advertised gateway address wins over the Service's",
			mv:     &memberView{spec: meshv1.Member{Name: "b"}, mesh: advertised, state: connected},
			want:   meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "eu"}, GatewayAddress: "203.0.113.2", GatewayPort: 15443},
			reason: meshv1.ReasonConnected},
		{name: "the federation's locality for a member wins over its Mesh's",
			mv:     &memberView{spec: meshv1.Member{Name: "b", Locality: &meshv1.Locality{Region: "us", Zone: "us-1"}}, mesh: mesh, state: connected},
			want:   meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "us", Zone: "us-1"}, GatewayAddress: "198.51.100.2", GatewayPort: 15443},
			reason: meshv1.ReasonConnected},
		{name: "a member without a Mesh yet is only named",
			mv:   &memberView{spec: meshv1.Member{Name: "b"}, state: connected},
			want: meshv1.MeshPeerSpec{ClusterName: "b"}, reason: meshv1.ReasonConnected},
		{name: "an unreachable member says why",
			mv:     &memberView{spec: meshv1.Member{Name: "b"}, mesh: mesh, err: errors.New("connection refused")},
			want:   meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "eu"}, GatewayAddress: "198.51.100.2", GatewayPort: 15443},
			reason: meshv1.ReasonDisconnected, message: "connection refused"},
		{name: "a member withdrawn after the grace period says so",
			mv:     &memberView{spec: meshv1.Member{Name: "b"}, mesh: mesh, err: errors.New("timeout"), withdrawn: true},
			want:   meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-2", TrustDomain: "example.org", Locality: meshv1.Locality{Region: "eu"}, GatewayAddress: "198.51.100.2", GatewayPort: 15443},
			reason: meshv1.ReasonWithdrawn, message: "withdrawn after the grace period"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := peerFor(tc.mv, "meshfed-system.global")
			if p.Name != tc.mv.spec.Name || p.Labels[meshv1.LabelFederation] != "meshfed-system.global" {
				t.Errorf("name %q, labels %v", p.Name, p.Labels)
			}
			if p.Spec != tc.want {
				t.Errorf("spec %+v, want %+v", p.Spec, tc.want)
			}
			c := meta.FindStatusCondition(p.Status.Conditions, meshv1.ConditionConnected)
			if c == nil || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) {
				t.Errorf("Connected %+v, want reason %s with %q", c, tc.reason, tc.message)
			}
		})
	}
}

func TestStageWaiting(t *testing.T) {
	// Fingerprints are of the certificates' bytes: these stand for two intermediates.
	newA, newB := &x509.Certificate{Raw: []byte("a-g2")}, &x509.Certificate{Raw: []byte("b-g2")}
	next := &generation{cas: map[string]*trust.IntermediateCA{"a": {Chain: []*x509.Certificate{newA}}, "b": {Chain: []*x509.Certificate{newB}}}}
	onlyA := &generation{cas: map[string]*trust.IntermediateCA{"a": {Chain: []*x509.Certificate{newA}}}}
	member := func(name string, rep meshv1.MeshTrustStatus) *memberView {
		return &memberView{spec: meshv1.Member{Name: name}, mesh: &meshv1.Mesh{Status: meshv1.MeshStatus{Trust: &rep}}}
	}
	holds := func(bundle string, inter *x509.Certificate, current, total int32) meshv1.MeshTrustStatus {
		return meshv1.MeshTrustStatus{BundleVersion: bundle, IntermediateFingerprint: trust.Fingerprint(inter),
			WorkloadCertificates: total, WorkloadCertificatesCurrent: current}
	}
	cases := []struct {
		name    string
		stage   string
		gen     *generation
		members []*memberView
		want    []string // a part of each line, in order
	}{
		{name: "AddRoot is done once every member reports the bundle", stage: meshv1.StageAddRoot, gen: next,
			members: []*memberView{member("a", holds("v2", newA, 0, 0)), member("b", holds("v2", newB, 0, 0))}},
		{name: "AddRoot waits for a member's bundle", stage: meshv1.StageAddRoot, gen: next,
			members: []*memberView{member("a", holds("v2", newA, 0, 0)), member("b", holds("v1", newB, 0, 0))},
			want:    []string{`b: reports trust bundle "v1", waiting for "v2"`}},
		{name: "AddRoot waits for an intermediate under the new root", stage: meshv1.StageAddRoot, gen: onlyA,
			members: []*memberView{member("a", holds("v2", newA, 0, 0)), member("b", holds("v2", newB, 0, 0))},
			want:    []string{"b: its intermediate under the new root is not issued yet"}},
		{name: "Reissue waits for the new intermediate to be loaded", stage: meshv1.StageReissue, gen: next,
			members: []*memberView{member("a", holds("v2", newB, 0, 0)), member("b", holds("v2", newB, 0, 0))},
			want:    []string{"a: has not loaded its new intermediate yet"}},
		{name: "Reissue waits for workload certificates", stage: meshv1.StageReissue, gen: next,
			members: []*memberView{member("a", holds("v2", newA, 2, 3)), member("b", holds("v2", newB, 3, 3))},
			want:    []string{"a: 2 of 3 workload certificates re-issued"}},
		{name: "Reissue waits for a member with no intermediate", stage: meshv1.StageReissue, gen: onlyA,
			members: []*memberView{member("a", holds("v2", newA, 1, 1)), member("b", meshv1.MeshTrustStatus{})},
			want:    []string{"b: its intermediate under the new root is not issued yet"}},
		{name: "DropRoot waits for the bundle without the old root", stage: meshv1.StageDropRoot, gen: next,
			members: []*memberView{member("a", holds("v3", newA, 0, 0)), member("b", holds("v2", newB, 0, 0))},
			want:    []string{`b: reports trust bundle "v2", waiting for "v3"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScope(&meshv1.MeshFederation{}, "meshfed-system/global")
			s.members = tc.members
			bundle := "v2"
			if tc.stage == meshv1.StageDropRoot {
				bundle = "v3"
			}
			got := stageWaiting(s, tc.stage, bundle, tc.gen, tc.gen)
			if len(got) != len(tc.want) {
				t.Fatalf("waiting %q, want %d lines like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("line %d %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestUpdateStatus(t *testing.T) {
	synced := func(name string) *memberView {
		return &memberView{spec: meshv1.Member{Name: name}, usable: true, synced: true, imported: 2}
	}
	cases := []struct {
		name       string
		previous   []meshv1.MemberStatus
		members    []*memberView
		err        error
		connected  int32
		reason     string
		messages   map[string]string // a part of each member's message
		wantEvents []string          // a part of each Event, in order
	}{
		{name: "every member synced: Ready", members: []*memberView{synced("a"), synced("b")}, connected: 2, reason: meshv1.ReasonReconciled},
		{name: "an unreachable member is named in Ready and its status",
			members:   []*memberView{synced("a"), {spec: meshv1.Member{Name: "b"}, err: errors.New("dial tcp: connection refused")}},
			connected: 1, reason: meshv1.ReasonMembersNotConnected, messages: map[string]string{"b": "connection refused"},
			wantEvents: []string{"MemberConfigInvalid member b: dial tcp: connection refused"}},
		{name: "a member that drops is an Event, and its withdrawal is said",
			previous:  []meshv1.MemberStatus{{Name: "a", Connected: true}, {Name: "b", Connected: true}},
			members:   []*memberView{synced("a"), {spec: meshv1.Member{Name: "b"}, err: errors.New("timeout"), withdrawn: true}},
			connected: 1, reason: meshv1.ReasonMembersNotConnected, messages: map[string]string{"b": "endpoints withdrawn after the 30s grace period"},
			wantEvents: []string{"MemberDisconnected member b: timeout"}},
		{name: "a member that comes back is an Event",
			previous:  []meshv1.MemberStatus{{Name: "a", Connected: false}},
			members:   []*memberView{synced("a")},
			connected: 1, reason: meshv1.ReasonReconciled,
			wantEvents: []string{"MemberConnected member a is connected"}},
		{name: "namespaces missing in a member are listed",
			members:   []*memberView{{spec: meshv1.Member{Name: "a"}, usable: true, synced: true, pendingNamespaces: []string{"billing", "shop"}}},
			connected: 1, reason: meshv1.ReasonReconciled, messages: map[string]string{"a": "namespaces that do not exist in this member: billing, shop"}},
		{name: "a failed pass with every member connected is SyncFailed",
			members: []*memberView{synced("a")}, err: errors.New("write ServiceImport shop/cart: forbidden"),
			connected: 1, reason: meshv1.ReasonSyncFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			events := record.NewFakeRecorder(10)
			r := &Reconciler{Recorder: events, GracePeriod: 30 * time.Second}
			fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Status: meshv1.MeshFederationStatus{Members: tc.previous}}
			s := newScope(fed, "meshfed-system/global")
			s.members = tc.members
			r.updateStatus(s, tc.err)

			if fed.Status.ConnectedMembers != tc.connected || fed.Status.ObservedGeneration != 3 {
				t.Errorf("connected %d, observed generation %d; want %d, 3", fed.Status.ConnectedMembers, fed.Status.ObservedGeneration, tc.connected)
			}
			ready := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionReady)
			if ready == nil || ready.Reason != tc.reason || ready.ObservedGeneration != 3 {
				t.Fatalf("Ready %+v, want reason %s", ready, tc.reason)
			}
			if tc.err != nil && !strings.Contains(ready.Message, tc.err.Error()) {
				t.Errorf("Ready says %q, not the error", ready.Message)
			}
			for _, ms := range fed.Status.Members {
				if want := tc.messages[ms.Name]; !strings.Contains(ms.Message, want) {
					t.Errorf("member %s: message %q, want %q", ms.Name, ms.Message, want)
				}
				if ms.Connected && (ms.LastSyncTime == nil || ms.Imported != 2 && len(tc.messages) == 0) {
					t.Errorf("member %s: a synced member without its sync time or imports: %+v", ms.Name, ms)
				}
				if !ms.Connected && !strings.Contains(ready.Message, ms.Name+": ") {
					t.Errorf("Ready %q does not name member %s", ready.Message, ms.Name)
				}
			}
			var got []string // the member Events (trust and rotation ones are tested elsewhere)
			for len(events.Events) > 0 {
				if e := <-events.Events; strings.Contains(e, " Member") {
					got = append(got, e)
				}
			}
			if len(got) != len(tc.wantEvents) {
				t.Fatalf("Events %q, want %q", got, tc.wantEvents)
			}
			for i, w := range tc.wantEvents {
				if !strings.Contains(got[i], w) {
					t.Errorf("Event %q, want %q", got[i], w)
				}
			}
		})
	}
}

func TestLeavingMembers(t *testing.T) {
	ref := func(name string) *meshv1.SecretKeyRef { return &meshv1.SecretKeyRef{Name: name} }
	earlier := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	fed := &meshv1.MeshFederation{
		Spec: meshv1.MeshFederationSpec{Members: []meshv1.Member{{Name: "a"}, {Name: "back"}}},
		Status: meshv1.MeshFederationStatus{
			Members: []meshv1.MemberStatus{
				{Name: "a", KubeconfigSecretRef: ref("member-a")},
				{Name: "b", KubeconfigSecretRef: ref("member-b")}, // removed while the hub was down
				{Name: "old"}, // reported by a hub that did not remember Secrets
			},
			LeavingMembers: []meshv1.LeavingMember{
				{Name: "c", KubeconfigSecretRef: ref("member-c"), Since: earlier, Message: "not reachable"},
				{Name: "back", KubeconfigSecretRef: ref("member-back"), Since: earlier}, // re-added to the spec
			},
		},
	}
	got := leavingMembers(fed, []string{"a", "c", "d"}, now)
	want := []meshv1.LeavingMember{
		{Name: "b", KubeconfigSecretRef: ref("member-b"), Since: now},
		{Name: "c", KubeconfigSecretRef: ref("member-c"), Since: earlier, Message: "not reachable"},
		{Name: "d", Since: now}, // left while the hub ran: the registry holds its kubeconfig
		{Name: "old", Since: now},
	}
	if !apiequality.Semantic.DeepEqual(got, want) {
		t.Errorf("leaving members\n got %+v\nwant %+v", got, want)
	}
}

func TestKeepUnknown(t *testing.T) {
	cs := func(names ...string) []mcsv1beta1.ClusterStatus {
		var out []mcsv1beta1.ClusterStatus
		for _, n := range names {
			out = append(out, mcsv1beta1.ClusterStatus{Cluster: n})
		}
		return out
	}
	unknown := map[string]bool{"b": true}
	if got := keepUnknown(cs("a", "c"), cs("a", "b", "c"), unknown); !apiequality.Semantic.DeepEqual(got, cs("a", "b", "c")) {
		t.Errorf("an unknown exporter was dropped: %v", got)
	}
	if got := keepUnknown(cs("a"), cs("a", "c"), unknown); !apiequality.Semantic.DeepEqual(got, cs("a")) {
		t.Errorf("a known cluster that stopped exporting was kept: %v", got)
	}
	if !listsAny(cs("a", "b"), unknown) || listsAny(cs("a", "c"), unknown) {
		t.Error("listsAny does not find the unknown member")
	}
}

// TestRenewalDue: the hub renews a third of the token life before the token ends, at once
// when that moment has passed (a short token from an earlier join, a hub that was down).
func TestRenewalDue(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		expiry time.Time
		want   time.Duration
	}{
		{"fresh 24 h token", now.Add(24 * time.Hour), 16 * time.Hour},
		{"9 h left", now.Add(9 * time.Hour), time.Hour},
		{"exactly 8 h left", now.Add(8 * time.Hour), 0},
		{"10 min left", now.Add(10 * time.Minute), 0},
		{"expired", now.Add(-time.Minute), 0},
	}
	for _, tc := range cases {
		if got := renewalDue(tc.expiry, now, 24*time.Hour); got != tc.want {
			t.Errorf("%s: renew in %s, want %s", tc.name, got, tc.want)
		}
	}
}
