package mesh

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// scope is the state of one reconcile of the Mesh.
type scope struct {
	mesh *meshv1.Mesh
	// base is the Mesh as read, for the status patch.
	base *meshv1.Mesh
	// conditions are those the pass sets, written by the status patch.
	conditions []metav1.Condition
}

// set records a condition of the pass, in place of one of the same type.
func (s *scope) set(c metav1.Condition) {
	for i := range s.conditions {
		if s.conditions[i].Type == c.Type {
			s.conditions[i] = c
			return
		}
	}
	s.conditions = append(s.conditions, c)
}
