package trust

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// A root rotation moves every member from the intermediates of one root generation to
// those of the next without a moment in which two members do not trust each other:
//
//	AddRoot   members keep their intermediates; the new root joins every bundle.
//	Reissue   members get intermediates under the new root and re-issue workload
//	          certificates; both roots stay trusted.
//	DropRoot  the old root leaves every bundle.
//
// A stage ends once every member reports it done and a propagation delay has passed.
// Aborting before the new root is used cancels the rotation; aborting later runs the
// stages back to the old root, so the trust bundle never loses a root still in use.

// Plan is what the members hold in one state: the generation whose intermediates they
// issue with, and the generations whose roots they trust.
type Plan struct {
	Serve meshv1.RootRef
	Trust []meshv1.RootRef
}

// PlanFor is the plan of a state.
func PlanFor(root meshv1.RootRef, rot *meshv1.RotationStatus) Plan {
	if rot == nil {
		return Plan{Serve: root, Trust: []meshv1.RootRef{root}}
	}
	switch rot.Stage {
	case meshv1.StageAddRoot:
		return Plan{Serve: root, Trust: []meshv1.RootRef{root, rot.To}}
	case meshv1.StageReissue:
		return Plan{Serve: rot.To, Trust: []meshv1.RootRef{root, rot.To}}
	default:
		return Plan{Serve: rot.To, Trust: []meshv1.RootRef{rot.To}}
	}
}

// Transition is a change of rotation state worth an Event.
type Transition struct {
	Reason  string
	Message string
}

// Step is the input of Advance besides the state.
type Step struct {
	// Desired is the root the spec asks for.
	Desired meshv1.RootRef
	// LastGeneration is the highest generation used so far.
	LastGeneration int32
	Paused         bool
	// Done tells whether every member reports the current stage done.
	Done  bool
	Delay time.Duration
	Now   time.Time
}

// Advance decides the next state of the rotation. It returns the new state, the
// transition taken (zero when none), and how long to wait before the stage may end.
func Advance(root meshv1.RootRef, rot *meshv1.RotationStatus, in Step) (meshv1.RootRef, *meshv1.RotationStatus, Transition, time.Duration) {
	now := metav1.NewTime(in.Now)
	if rot == nil {
		if SameSource(root, in.Desired) {
			return root, nil, Transition{}, 0
		}
		to := in.Desired
		to.Generation, to.Fingerprint = max(root.Generation, in.LastGeneration)+1, ""
		return root, &meshv1.RotationStatus{To: to, Stage: meshv1.StageAddRoot, StartTime: now, StageTime: now},
			Transition{meshv1.ReasonRotationStarted, fmt.Sprintf("rotating from %s to %s: adding the new root to every trust bundle", Describe(root), Describe(to))}, 0
	}
	next := *rot.DeepCopy()
	if SameSource(root, in.Desired) {
		if next.Stage == meshv1.StageAddRoot && !next.Reversed {
			return root, nil, Transition{meshv1.ReasonRotationCanceled, fmt.Sprintf("rotation to %s canceled before any member used it; staying on %s", Describe(next.To), Describe(root))}, 0
		}
		// The new root is in use: run back to the old one. Members keep issuing with
		// what they issue with now, and the bundle keeps both roots.
		stage := meshv1.StageAddRoot
		if next.Stage == meshv1.StageAddRoot {
			stage = meshv1.StageReissue
		}
		back := meshv1.RotationStatus{To: root, Stage: stage, Reversed: true, StartTime: next.StartTime, StageTime: now}
		return next.To, &back, Transition{meshv1.ReasonRotationAborting, fmt.Sprintf("rotation to %s aborted after the new root was in use: moving every member back to %s", Describe(next.To), Describe(root))}, 0
	}
	if in.Paused {
		next.DoneTime = nil
		return root, &next, Transition{}, 0
	}
	if !in.Done {
		next.DoneTime = nil
		return root, &next, Transition{}, 0
	}
	if next.DoneTime == nil {
		next.DoneTime = &now
	}
	if left := in.Delay - in.Now.Sub(next.DoneTime.Time); left > 0 {
		return root, &next, Transition{}, left
	}
	next.DoneTime, next.StageTime = nil, now
	switch next.Stage {
	case meshv1.StageAddRoot:
		next.Stage = meshv1.StageReissue
		return root, &next, Transition{meshv1.ReasonRotationStage, fmt.Sprintf("every member trusts %s: re-issuing intermediates under it", Describe(next.To))}, 0
	case meshv1.StageReissue:
		next.Stage = meshv1.StageDropRoot
		return root, &next, Transition{meshv1.ReasonRotationStage, fmt.Sprintf("every member issues under %s: dropping %s from the trust bundles", Describe(next.To), Describe(root))}, 0
	}
	took := in.Now.Sub(next.StartTime.Time).Round(time.Second) // status times have whole seconds
	if next.Reversed {
		return next.To, nil, Transition{meshv1.ReasonRotationAborted, fmt.Sprintf("rotation aborted: every member is back on %s after %s", Describe(next.To), took)}, 0
	}
	return next.To, nil, Transition{meshv1.ReasonRotationCompleted, fmt.Sprintf("rotated from %s to %s in %s", Describe(root), Describe(next.To), took)}, 0
}

// StageNumber is the metric value of a stage: 0 without a rotation, then 1, 2, 3.
func StageNumber(rot *meshv1.RotationStatus) float64 {
	if rot == nil {
		return 0
	}
	switch rot.Stage {
	case meshv1.StageAddRoot:
		return 1
	case meshv1.StageReissue:
		return 2
	default:
		return 3
	}
}
