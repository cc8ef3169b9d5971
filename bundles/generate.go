package bundles

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Package is the OLM package name; the CSV is named <Package>.v<version>.
const Package = "meshfed"

// Channel is the channel every bundle is published in.
const Channel = "stable"

// Input is what a bundle is made from.
type Input struct {
	// Version of the bundle, a semver without "v".
	Version string
	// Rendered is `kustomize build config/manifests`: CRDs, RBAC, the Deployment, the
	// webhook configuration, Services and the samples.
	Rendered []byte
	// BaseCSV holds the CSV's descriptive fields (config/manifests/bases).
	BaseCSV []byte
	// Icon is an SVG image.
	Icon []byte
}

// Generate returns the files of one bundle by path relative to the bundle directory.
func Generate(in Input) (map[string][]byte, error) {
	objs, err := decodeAll(in.Rendered)
	if err != nil {
		return nil, err
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(in.BaseCSV, &csv); err != nil {
		return nil, fmt.Errorf("base CSV: %w", err)
	}
	files := map[string][]byte{}
	var (
		examples    []json.RawMessage
		deployments []operatorsv1alpha1.StrategyDeploymentSpec
		webhooks    []webhook
		clusterRole = map[string][]rbacv1.PolicyRule{}
		role        = map[string][]rbacv1.PolicyRule{}
		bindings    []binding
		// ClusterRoles for users to bind (metrics readers): bound to no account of the
		// operator, they ship as manifests.
		forUsers = map[string]*unstructured.Unstructured{}
	)
	for _, u := range objs {
		switch gvk := u.GroupVersionKind(); {
		case gvk.Kind == "CustomResourceDefinition":
			strip(u)
			if files["manifests/"+u.GetName()+".yaml"], err = yaml.Marshal(u.Object); err != nil {
				return nil, err
			}
		case gvk.Group == "meshfed.io":
			u.SetNamespace("")
			raw, err := json.Marshal(u.Object)
			if err != nil {
				return nil, err
			}
			examples = append(examples, raw)
		case gvk.Kind == "Deployment":
			var d appsv1.Deployment
			if err := fromUnstructured(u, &d); err != nil {
				return nil, err
			}
			deployments = append(deployments, operatorsv1alpha1.StrategyDeploymentSpec{Name: d.Name, Spec: d.Spec, Label: d.Labels})
		case gvk.Kind == "ClusterRole" || gvk.Kind == "Role":
			var r rbacv1.ClusterRole // a Role has the same shape
			if err := fromUnstructured(u, &r); err != nil {
				return nil, err
			}
			if gvk.Kind == "Role" {
				role[r.Name] = r.Rules
			} else {
				clusterRole[r.Name] = r.Rules
				forUsers[r.Name] = u
			}
		case gvk.Kind == "ClusterRoleBinding" || gvk.Kind == "RoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := fromUnstructured(u, &b); err != nil {
				return nil, err
			}
			for _, s := range b.Subjects {
				if s.Kind == rbacv1.ServiceAccountKind {
					bindings = append(bindings, binding{account: s.Name, kind: b.RoleRef.Kind, role: b.RoleRef.Name})
				}
			}
		case gvk.Kind == "ValidatingWebhookConfiguration":
			var w admissionregistrationv1.ValidatingWebhookConfiguration
			if err := fromUnstructured(u, &w); err != nil {
				return nil, err
			}
			for _, wh := range w.Webhooks {
				webhooks = append(webhooks, webhook{name: wh.Name, typ: operatorsv1alpha1.ValidatingAdmissionWebhook, clientConfig: wh.ClientConfig,
					rules: wh.Rules, failurePolicy: wh.FailurePolicy, sideEffects: wh.SideEffects, versions: wh.AdmissionReviewVersions,
					objectSelector: wh.ObjectSelector, timeout: wh.TimeoutSeconds})
			}
		case gvk.Kind == "MutatingWebhookConfiguration":
			var w admissionregistrationv1.MutatingWebhookConfiguration
			if err := fromUnstructured(u, &w); err != nil {
				return nil, err
			}
			for _, wh := range w.Webhooks {
				if wh.NamespaceSelector != nil && len(wh.NamespaceSelector.MatchLabels) > 0 {
					// OLM sets a webhook's namespaceSelector from the OperatorGroup: one that
					// selects namespaces by label (injection by namespace) cannot be kept,
					// and must not become "every namespace". Under OLM, pods opt in with
					// their own label.
					continue
				}
				webhooks = append(webhooks, webhook{name: wh.Name, typ: operatorsv1alpha1.MutatingAdmissionWebhook, clientConfig: wh.ClientConfig,
					rules: wh.Rules, failurePolicy: wh.FailurePolicy, sideEffects: wh.SideEffects, versions: wh.AdmissionReviewVersions,
					objectSelector: wh.ObjectSelector, timeout: wh.TimeoutSeconds, reinvocation: wh.ReinvocationPolicy})
			}
		case (gvk.Kind == "Service" && !strings.Contains(u.GetName(), "webhook")) || gvk.Kind == "NetworkPolicy":
			// OLM creates the webhook's Service itself; others ship as manifests, as do
			// NetworkPolicies.
			strip(u)
			u.SetNamespace("")
			name := fmt.Sprintf("manifests/%s_%s_%s.yaml", u.GetName(), gvk.Version, strings.ToLower(gvk.Kind))
			if files[name], err = yaml.Marshal(u.Object); err != nil {
				return nil, err
			}
		case gvk.Kind == "Namespace" || gvk.Kind == "ServiceAccount" || gvk.Kind == "Service":
			// OLM creates the namespace, the accounts of the install strategy and the
			// webhook Service.
		default:
			return nil, fmt.Errorf("%s %s: no place for this kind in a bundle", gvk.Kind, u.GetName())
		}
	}
	for _, b := range bindings {
		delete(forUsers, b.role)
	}
	for name, u := range forUsers {
		strip(u)
		if files["manifests/"+name+"_rbac.authorization.k8s.io_v1_clusterrole.yaml"], err = yaml.Marshal(u.Object); err != nil {
			return nil, err
		}
	}
	if len(deployments) != 1 {
		return nil, fmt.Errorf("want one Deployment in the rendered manifests, found %d", len(deployments))
	}
	d := deployments[0]
	strategy := operatorsv1alpha1.StrategyDetailsDeployment{DeploymentSpecs: deployments}
	for _, b := range bindings {
		if b.kind == "Role" {
			strategy.Permissions = append(strategy.Permissions, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: b.account, Rules: role[b.role]})
		} else {
			strategy.ClusterPermissions = append(strategy.ClusterPermissions, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: b.account, Rules: clusterRole[b.role]})
		}
	}

	image := d.Spec.Template.Spec.Containers[0].Image
	csv.Name = Package + ".v" + in.Version
	csv.Spec.Version.Version, err = parseVersion(in.Version)
	if err != nil {
		return nil, err
	}
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment, StrategySpec: strategy}
	csv.Spec.RelatedImages = []operatorsv1alpha1.RelatedImage{{Name: "meshfed-operator", Image: image}}
	// The images the operator deploys (the gateway, meshfed-dns) and injects (the agent),
	// from its arguments, so that disconnected installs mirror them too.
	deployed := map[string]string{"--gateway-image=": "eastwest-gateway", "--dns-image=": "meshfed-dns", "--agent-image=": "meshfed-agent"}
	for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
		for flag, name := range deployed {
			if img, ok := strings.CutPrefix(arg, flag); ok {
				csv.Spec.RelatedImages = append(csv.Spec.RelatedImages, operatorsv1alpha1.RelatedImage{Name: name, Image: img})
			}
		}
	}
	csv.Spec.Icon = []operatorsv1alpha1.Icon{{Data: base64.StdEncoding.EncodeToString(in.Icon), MediaType: "image/svg+xml"}}
	csv.Annotations["containerImage"] = image
	alm, err := json.MarshalIndent(examples, "", "  ")
	if err != nil {
		return nil, err
	}
	csv.Annotations["alm-examples"] = string(alm)
	csv.Annotations["operators.operatorframework.io/builder"] = "meshfed-bundle"
	if csv.Spec.WebhookDefinitions, err = webhookDefinitions(webhooks, d); err != nil {
		return nil, err
	}
	if files["manifests/"+Package+".clusterserviceversion.yaml"], err = yaml.Marshal(&csv); err != nil {
		return nil, err
	}
	annotations := bundleAnnotations()
	if files["metadata/annotations.yaml"], err = yaml.Marshal(map[string]any{"annotations": annotations}); err != nil {
		return nil, err
	}
	files["bundle.Dockerfile"] = dockerfile(annotations)
	files["tests/scorecard/config.yaml"] = []byte(scorecardConfig)
	return files, nil
}

type binding struct{ account, kind, role string }

// webhookDefinitions turns the webhook configuration into the CSV's definitions; OLM
// creates the Service and the certificates and routes to the Deployment's webhook port.
// webhook is what a bundle keeps of a validating or mutating webhook.
type webhook struct {
	name           string
	typ            operatorsv1alpha1.WebhookAdmissionType
	clientConfig   admissionregistrationv1.WebhookClientConfig
	rules          []admissionregistrationv1.RuleWithOperations
	failurePolicy  *admissionregistrationv1.FailurePolicyType
	sideEffects    *admissionregistrationv1.SideEffectClass
	versions       []string
	objectSelector *metav1.LabelSelector
	timeout        *int32
	reinvocation   *admissionregistrationv1.ReinvocationPolicyType
}

func webhookDefinitions(webhooks []webhook, d operatorsv1alpha1.StrategyDeploymentSpec) ([]operatorsv1alpha1.WebhookDescription, error) {
	var port int32
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "webhook" {
			port = p.ContainerPort
		}
	}
	if len(webhooks) > 0 && port == 0 {
		return nil, errors.New("the Deployment's container has no port named webhook")
	}
	var out []operatorsv1alpha1.WebhookDescription
	for _, w := range webhooks {
		if w.clientConfig.Service == nil || w.clientConfig.Service.Path == nil {
			return nil, fmt.Errorf("webhook %s: want a Service client config with a path", w.name)
		}
		target := intstr.FromInt32(port)
		out = append(out, operatorsv1alpha1.WebhookDescription{
			GenerateName:            w.name,
			Type:                    w.typ,
			DeploymentName:          d.Name,
			ContainerPort:           443,
			TargetPort:              &target,
			Rules:                   w.rules,
			FailurePolicy:           w.failurePolicy,
			SideEffects:             w.sideEffects,
			AdmissionReviewVersions: w.versions,
			WebhookPath:             w.clientConfig.Service.Path,
			ObjectSelector:          w.objectSelector,
			TimeoutSeconds:          w.timeout,
			ReinvocationPolicy:      w.reinvocation,
		})
	}
	return out, nil
}

func bundleAnnotations() map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         Package,
		"operators.operatorframework.io.bundle.channels.v1":        Channel,
		"operators.operatorframework.io.bundle.channel.default.v1": Channel,
		"operators.operatorframework.io.test.mediatype.v1":         "scorecard+v1",
		"operators.operatorframework.io.test.config.v1":            "tests/scorecard/",
	}
}

func dockerfile(annotations map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString("# Generated by `make bundle`; do not edit.\nFROM scratch\n\n")
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "LABEL %s=%s\n", k, annotations[k])
	}
	b.WriteString("\nCOPY manifests /manifests/\nCOPY metadata /metadata/\nCOPY tests/scorecard /tests/scorecard/\n")
	return b.Bytes()
}

const scorecardConfig = `# Generated by ` + "`make bundle`" + `; do not edit.
apiVersion: scorecard.operatorframework.io/v1alpha3
kind: Configuration
metadata:
  name: config
stages:
- parallel: true
  tests:
  - entrypoint: [scorecard-test, basic-check-spec]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: basic, test: basic-check-spec-test}
  - entrypoint: [scorecard-test, olm-bundle-validation]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: olm, test: olm-bundle-validation-test}
  - entrypoint: [scorecard-test, olm-crds-have-validation]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: olm, test: olm-crds-have-validation-test}
  - entrypoint: [scorecard-test, olm-crds-have-resources]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: olm, test: olm-crds-have-resources-test}
  - entrypoint: [scorecard-test, olm-spec-descriptors]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: olm, test: olm-spec-descriptors-test}
  - entrypoint: [scorecard-test, olm-status-descriptors]
    image: quay.io/operator-framework/scorecard-test:v1.42.2
    labels: {suite: olm, test: olm-status-descriptors-test}
`

// decodeAll reads every object of a multi-document YAML stream.
func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("rendered manifests: %w", err)
		}
		if len(obj) > 0 {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// strip removes what an object in a bundle must not carry.
func strip(u *unstructured.Unstructured) {
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
}
