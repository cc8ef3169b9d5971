package routes

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshfed/meshfed/operator/internal/translate"
)

// TestParentStatuses: meshfed replaces its own entries, keeps those of other controllers
// (a Gateway's), a condition whose status stays keeps its lastTransitionTime, and the
// current statuses are left as they were.
func TestParentStatuses(t *testing.T) {
	echo := gatewayv1.ParentReference{Group: ptr.To(gatewayv1.Group("multicluster.x-k8s.io")), Kind: ptr.To(gatewayv1.Kind("ServiceImport")), Name: "echo"}
	gateway := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "public"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	then := metav1.NewTime(time.Unix(1000, 0))
	current := []gatewayv1.RouteParentStatus{gateway, {ParentRef: echo, ControllerName: translate.ControllerName, Conditions: []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: then},
		{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", LastTransitionTime: then},
	}}}
	parents := []translate.ParentResult{{Ref: echo,
		Accepted:     translate.Condition{OK: true, Reason: gatewayv1.RouteReasonAccepted, Message: "ok"},
		ResolvedRefs: translate.Condition{Reason: gatewayv1.RouteReasonBackendNotFound, Message: "backendRef ServiceImport shop/missing does not exist in this cluster"}}}
	before := slices.Clone(current[1].Conditions)
	got := ParentStatuses(current, parents, 3)
	// Reconcile tells a change by comparing current with the result: current stays.
	if !reflect.DeepEqual(current[1].Conditions, before) {
		t.Errorf("current changed: %+v", current[1].Conditions)
	}
	if len(got) != 2 || got[0].ControllerName != "example.com/gateway" {
		t.Fatalf("the Gateway's entry was not kept first: %+v", got)
	}
	ours := got[1]
	accepted := meta.FindStatusCondition(ours.Conditions, "Accepted")
	resolved := meta.FindStatusCondition(ours.Conditions, "ResolvedRefs")
	if accepted == nil || !accepted.LastTransitionTime.Equal(&then) || accepted.ObservedGeneration != 3 {
		t.Errorf("Accepted %+v: want its transition time kept and generation 3", accepted)
	}
	if resolved == nil || resolved.Status != metav1.ConditionFalse || resolved.Reason != "BackendNotFound" || resolved.LastTransitionTime.Equal(&then) {
		t.Errorf("ResolvedRefs %+v: want False BackendNotFound, a new transition time", resolved)
	}
	if again := ParentStatuses(nil, nil, 3); len(again) != 0 {
		t.Errorf("no parent of meshfed's, no entry: %+v", again)
	}
}
