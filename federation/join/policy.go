package join

import (
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/utils/ptr"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// AdmissionPolicy returns the ValidatingAdmissionPolicy, and its binding, that hold the
// hub's ServiceAccount (of mesh namespace ns) to what the hub writes where RBAC cannot say
// it: EndpointSlices only of meshfed's mirrors and ServiceImports only of meshfed's, both
// before and after a change (so the hub cannot take over, rewrite or delete a user's or the
// EndpointSlice controller's objects); ConfigMaps only the intermediate's in ns; tokens
// only of at most MaxTokenTTL.
func AdmissionPolicy(ns string) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	write := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete}
	rule := func(group string, ops []admissionregistrationv1.OperationType, resources ...string) admissionregistrationv1.NamedRuleWithOperations {
		return admissionregistrationv1.NamedRuleWithOperations{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: ops,
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: resources},
		}}
	}
	hub := serviceaccount.MakeUsername(ns, ServiceAccount)
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Labels: managedLabels()},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{
				rule("discovery.k8s.io", write, "endpointslices"),
				rule("multicluster.x-k8s.io", write, "serviceimports", "serviceimports/status"),
				rule("", write, "configmaps"),
				rule("", []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, "serviceaccounts/token"),
			}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "the-hub", Expression: fmt.Sprintf("request.userInfo.username == %q", hub)}},
			Validations: []admissionregistrationv1.Validation{
				{
					Expression: fmt.Sprintf("request.resource.resource != 'endpointslices' || (%s)",
						beforeAndAfter(labelIs(discoveryv1.LabelManagedBy, meshv1.EndpointSliceManager))),
					Message: fmt.Sprintf("the meshfed hub writes only EndpointSlices labelled %s=%s", discoveryv1.LabelManagedBy, meshv1.EndpointSliceManager),
					Reason:  ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression: fmt.Sprintf("request.resource.resource != 'serviceimports' || (%s)",
						beforeAndAfter(labelIs(meshv1.LabelManagedBy, meshv1.ManagedByValue))),
					Message: fmt.Sprintf("the meshfed hub writes only ServiceImports labelled %s=%s", meshv1.LabelManagedBy, meshv1.ManagedByValue),
					Reason:  ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression: fmt.Sprintf("request.resource.resource != 'configmaps' || (request.namespace == %q && request.name == %q)",
						ns, trust.IntermediateConfigMap),
					Message: fmt.Sprintf("the meshfed hub writes only the ConfigMap %s/%s", ns, trust.IntermediateConfigMap),
					Reason:  ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression: fmt.Sprintf("request.resource.resource != 'serviceaccounts' || (has(object.spec.expirationSeconds) && object.spec.expirationSeconds <= %d)",
						int64(MaxTokenTTL.Seconds())),
					Message: fmt.Sprintf("the meshfed hub gets tokens of at most %s", MaxTokenTTL),
					Reason:  ptr.To(metav1.StatusReasonForbidden),
				},
			},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Labels: managedLabels()},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        PolicyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	return policy, binding
}

// labelIs is a CEL test, of the object named by the %[1]s placeholder, that label key has value.
func labelIs(key, value string) string {
	return fmt.Sprintf("has(%%[1]s.metadata.labels) && %[1]q in %%[1]s.metadata.labels && %%[1]s.metadata.labels[%[1]q] == %[2]q", key, value)
}

// beforeAndAfter applies test to the object a request writes (none on DELETE) and to the one
// it changes (none on CREATE).
func beforeAndAfter(test string) string {
	return fmt.Sprintf("(request.operation == 'DELETE' || (%s)) && (request.operation == 'CREATE' || (%s))",
		fmt.Sprintf(test, "object"), fmt.Sprintf(test, "oldObject"))
}
