package trust

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

func TestAdvance(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := meshv1.RootRef{Generation: 0, IssuerKind: KindSelfSigned}
	next := meshv1.RootRef{Generation: 1, IssuerKind: KindSelfSigned, Revision: "r2"}
	wantNext := meshv1.RootRef{IssuerKind: KindSelfSigned, Revision: "r2"}
	at := func(stage string, reversed bool) *meshv1.RotationStatus {
		return &meshv1.RotationStatus{To: next, Stage: stage, Reversed: reversed, StartTime: metav1.NewTime(t0), StageTime: metav1.NewTime(t0)}
	}
	doneSince := func(r *meshv1.RotationStatus, d time.Duration) *meshv1.RotationStatus {
		tm := metav1.NewTime(t0.Add(-d))
		r.DoneTime = &tm
		return r
	}
	cases := []struct {
		name      string
		root      meshv1.RootRef
		rot       *meshv1.RotationStatus
		step      Step
		wantRoot  int32
		wantStage string // "" for no rotation
		reversed  bool
		reason    string
		wait      time.Duration
	}{
		{name: "nothing asked", root: old, step: Step{Desired: old}, wantRoot: 0},
		{name: "a new revision starts a rotation", root: old, step: Step{Desired: wantNext}, wantStage: meshv1.StageAddRoot, reason: meshv1.ReasonRotationStarted},
		{name: "a new issuer starts a rotation", root: old, step: Step{Desired: meshv1.RootRef{IssuerKind: "ClusterIssuer", IssuerName: "corp"}}, wantStage: meshv1.StageAddRoot, reason: meshv1.ReasonRotationStarted},
		{name: "a stage not done waits", root: old, rot: at(meshv1.StageAddRoot, false), step: Step{Desired: wantNext, Delay: time.Second}, wantStage: meshv1.StageAddRoot},
		{name: "a done stage waits out the delay", root: old, rot: at(meshv1.StageAddRoot, false), step: Step{Desired: wantNext, Done: true, Delay: time.Second}, wantStage: meshv1.StageAddRoot, wait: time.Second},
		{name: "after the delay the next stage", root: old, rot: doneSince(at(meshv1.StageAddRoot, false), 2*time.Second), step: Step{Desired: wantNext, Done: true, Delay: time.Second}, wantStage: meshv1.StageReissue, reason: meshv1.ReasonRotationStage},
		{name: "reissue to drop", root: old, rot: doneSince(at(meshv1.StageReissue, false), time.Second), step: Step{Desired: wantNext, Done: true, Delay: time.Second}, wantStage: meshv1.StageDropRoot, reason: meshv1.ReasonRotationStage},
		{name: "drop completes", root: old, rot: doneSince(at(meshv1.StageDropRoot, false), time.Second), step: Step{Desired: wantNext, Done: true, Delay: time.Second}, wantRoot: 1, reason: meshv1.ReasonRotationCompleted},
		{name: "paused holds a done stage", root: old, rot: doneSince(at(meshv1.StageAddRoot, false), time.Hour), step: Step{Desired: wantNext, Done: true, Paused: true}, wantStage: meshv1.StageAddRoot},
		{name: "reverting during AddRoot cancels", root: old, rot: at(meshv1.StageAddRoot, false), step: Step{Desired: old}, wantRoot: 0, reason: meshv1.ReasonRotationCanceled},
		{name: "reverting while paused cancels", root: old, rot: at(meshv1.StageAddRoot, false), step: Step{Desired: old, Paused: true}, wantRoot: 0, reason: meshv1.ReasonRotationCanceled},
		{name: "reverting during Reissue runs back from AddRoot", root: old, rot: at(meshv1.StageReissue, false), step: Step{Desired: old}, wantRoot: 1, wantStage: meshv1.StageAddRoot, reversed: true, reason: meshv1.ReasonRotationAborting},
		{name: "reverting during DropRoot runs back from AddRoot", root: old, rot: at(meshv1.StageDropRoot, false), step: Step{Desired: old}, wantRoot: 1, wantStage: meshv1.StageAddRoot, reversed: true, reason: meshv1.ReasonRotationAborting},
		{name: "reverting a reversed AddRoot goes to Reissue", root: next, rot: &meshv1.RotationStatus{To: old, Stage: meshv1.StageAddRoot, Reversed: true}, step: Step{Desired: wantNext}, wantRoot: 0, wantStage: meshv1.StageReissue, reversed: true, reason: meshv1.ReasonRotationAborting},
		{name: "a reversed rotation ends aborted", root: next, rot: doneSince(&meshv1.RotationStatus{To: old, Stage: meshv1.StageDropRoot, Reversed: true}, time.Second), step: Step{Desired: old, Done: true}, wantRoot: 0, reason: meshv1.ReasonRotationAborted},
		{name: "a third root waits for the rotation", root: old, rot: at(meshv1.StageReissue, false), step: Step{Desired: meshv1.RootRef{IssuerKind: KindSelfSigned, Revision: "r3"}}, wantStage: meshv1.StageReissue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.step.Now = t0
			root, rot, tr, wait := Advance(tc.root, tc.rot, tc.step)
			if root.Generation != tc.wantRoot {
				t.Errorf("root generation %d, want %d", root.Generation, tc.wantRoot)
			}
			stage := ""
			if rot != nil {
				stage = rot.Stage
				if rot.Reversed != tc.reversed {
					t.Errorf("reversed %v", rot.Reversed)
				}
			}
			if stage != tc.wantStage {
				t.Errorf("stage %q, want %q", stage, tc.wantStage)
			}
			if tr.Reason != tc.reason {
				t.Errorf("transition %q (%s), want %q", tr.Reason, tr.Message, tc.reason)
			}
			if wait != tc.wait {
				t.Errorf("wait %s, want %s", wait, tc.wait)
			}
		})
	}
}

// TestRotationNeverDropsARootInUse walks every path of the state machine, aborting at
// every state, and checks the safety rule: whenever the members move to a new plan, every
// generation they may still issue with stays trusted.
func TestRotationNeverDropsARootInUse(t *testing.T) {
	g := func(n int32, rev string) meshv1.RootRef {
		return meshv1.RootRef{Generation: n, IssuerKind: KindSelfSigned, Revision: rev}
	}
	source := func(r meshv1.RootRef) meshv1.RootRef { r.Generation = 0; return r }
	a, b := g(0, "a"), g(1, "b")
	type state struct {
		root meshv1.RootRef
		rot  *meshv1.RotationStatus
		// inUse are the generations some workload may hold a certificate of.
		inUse []int32
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var walk func(s state, desired []meshv1.RootRef, depth int)
	walk = func(s state, desired []meshv1.RootRef, depth int) {
		if depth > 12 {
			return
		}
		for _, d := range desired {
			root, rot, _, _ := Advance(s.root, s.rot, Step{Desired: source(d), LastGeneration: 1, Done: true, Now: now})
			plan := PlanFor(root, rot)
			// Workloads leave a generation only when Reissue ends (the hub waited for every
			// member to re-issue); until then they may hold any generation they held.
			inUse := []int32{plan.Serve.Generation}
			if s.rot == nil || s.rot.Stage != meshv1.StageReissue || rot == nil || rot.Stage != meshv1.StageDropRoot {
				for _, gen := range s.inUse {
					if !slices.Contains(inUse, gen) {
						inUse = append(inUse, gen)
					}
				}
			}
			trusted := map[int32]bool{}
			for _, r := range plan.Trust {
				trusted[r.Generation] = true
			}
			for _, gen := range inUse {
				if !trusted[gen] {
					t.Fatalf("from %+v / %+v asking for %q: generation %d still in use but not trusted by %+v", s.root, s.rot, d.Revision, gen, plan)
				}
			}
			if rot == nil && s.rot == nil {
				continue // idle and nothing asked: a fixed point
			}
			walk(state{root: root, rot: rot, inUse: inUse}, desired, depth+1)
		}
	}
	walk(state{root: a, inUse: []int32{0}}, []meshv1.RootRef{a, b}, 0)
}
