package mesh

import (
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// A Certificate whose last issuance failed keeps an Issuing False condition; asking for a
// new issuance must turn that one True, not add a second that cert-manager never reads.
func TestSetIssuingAfterAFailedIssuance(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []cmapi.CertificateCondition
	}{
		{"no condition yet", nil},
		{"Ready only", []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue}}},
		{"a failed issuance", []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionFalse},
			{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionFalse, Reason: "Failed"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cmapi.Certificate{Status: cmapi.CertificateStatus{Conditions: tc.conds}}
			setIssuing(c, metav1.Now())
			var issuing []cmapi.CertificateCondition
			others := 0
			for _, cond := range c.Status.Conditions {
				if cond.Type == cmapi.CertificateConditionIssuing {
					issuing = append(issuing, cond)
				} else {
					others++
				}
			}
			if len(issuing) != 1 || issuing[0].Status != cmmeta.ConditionTrue || issuing[0].Reason != meshv1.ReasonIntermediateRotated {
				t.Errorf("Issuing conditions %+v, want one, True", issuing)
			}
			if others != 1 && len(tc.conds) > 0 {
				t.Errorf("the Ready condition was not kept: %+v", c.Status.Conditions)
			}
		})
	}
}
