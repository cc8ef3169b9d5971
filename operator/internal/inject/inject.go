// Package inject decides which pods join the mesh and adds what they need, as pure
// functions of the pod, its namespace's labels and the member's settings; the mutating
// webhook (operator/webhook) calls them.
//
// Template grpc-agent (proxyless gRPC) adds meshfed-agent as a native sidecar (an init
// container that keeps running; the app starts once it has credentials and a first
// configuration), a memory volume it shares with the app for the certificate, key, trust
// bundle and the xDS bootstrap, the trust-bundle ConfigMap, and a projected
// service-account token for the CA; each app container gets GRPC_XDS_BOOTSTRAP,
// GRPC_EXPERIMENTAL_XDS_SNI and the shared volume, read-only.
package inject

import (
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshfed/meshfed/agent"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
)

// The label (or annotation) a pod opts in or out with, and its values.
const (
	LabelInject = "meshfed.io/inject"
	Enabled     = "enabled"
	Disabled    = "disabled"
	// AnnotationInjected records the template a pod was injected with.
	AnnotationInjected = "meshfed.io/injected"
	// AnnotationTemplate picks the template (default grpc-agent).
	AnnotationTemplate = "meshfed.io/template"
)

// TemplateGRPCAgent is the proxyless gRPC template.
const TemplateGRPCAgent = "grpc-agent"

// Names of what injection adds.
const (
	AgentContainer = "meshfed-agent"
	CredentialsVol = "meshfed-credentials"
	TrustVol       = "meshfed-trust"
	TokenVol       = "meshfed-token"
	CredentialsDir = "/var/run/meshfed/credentials"
	TrustDir       = "/var/run/meshfed/trust"
	TokenDir       = "/var/run/secrets/meshfed/tokens"
	TokenFile      = "ca-token"
	// AgentHealthPort serves the agent's /ready, /healthz and /metrics.
	AgentHealthPort = 15021
)

// Config is what injection needs of the member.
type Config struct {
	AgentImage  string
	TrustDomain string
	Cluster     string
	// OperatorNamespace is where the CA and xDS Services are.
	OperatorNamespace string
	XDSPort           int32
}

// Decide says whether a pod is meshed: its own label or annotation first, then whether
// its namespace's labels match the Mesh's injection selector.
func Decide(pod *corev1.Pod, namespaceLabels map[string]string, selector labels.Selector) (bool, string) {
	for _, v := range []string{pod.Labels[LabelInject], pod.Annotations[LabelInject]} {
		switch v {
		case Disabled:
			return false, "the pod opts out (" + LabelInject + "=" + Disabled + ")"
		case Enabled:
			return true, "the pod opts in (" + LabelInject + "=" + Enabled + ")"
		}
	}
	if selector.Matches(labels.Set(namespaceLabels)) {
		return true, "its namespace matches the Mesh's injection selector " + selector.String()
	}
	return false, "neither the pod nor its namespace asks for injection"
}

// Refusal is a pod injection cannot handle; the webhook refuses it with this message.
type Refusal struct{ Message string }

func (r *Refusal) Error() string { return r.Message }

// Inject returns the pod with what its template adds, and whether it changed; a pod
// injected before comes back unchanged.
func Inject(in *corev1.Pod, cfg Config) (*corev1.Pod, bool, error) {
	template := in.Annotations[AnnotationTemplate]
	if template == "" {
		template = TemplateGRPCAgent
	}
	if template != TemplateGRPCAgent {
		return nil, false, &Refusal{fmt.Sprintf("annotation %s=%q: the template is %s", AnnotationTemplate, template, TemplateGRPCAgent)}
	}
	if in.Annotations[AnnotationInjected] == template && hasContainer(in.Spec.InitContainers, AgentContainer) {
		return in, false, nil
	}
	if err := conflicts(in); err != nil {
		return nil, false, err
	}
	if in.Spec.HostNetwork {
		return nil, false, &Refusal{"a pod on the host network cannot be meshed: its agent would take the node's ports; set " + LabelInject + "=" + Disabled}
	}
	pod := in.DeepCopy()
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationInjected] = template
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes()...)
	pod.Spec.InitContainers = append([]corev1.Container{agentContainer(cfg)}, pod.Spec.InitContainers...)
	for i := range pod.Spec.Containers {
		addApp(&pod.Spec.Containers[i])
	}
	return pod, true, nil
}

func hasContainer(cs []corev1.Container, name string) bool {
	return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}

// conflicts refuses a pod that already uses the names injection adds.
func conflicts(pod *corev1.Pod) error {
	for _, name := range []string{AgentContainer} {
		if hasContainer(pod.Spec.Containers, name) || hasContainer(pod.Spec.InitContainers, name) {
			return &Refusal{fmt.Sprintf("the pod already has a container named %s, which meshfed injects; rename it, or opt out with the label %s=%s", name, LabelInject, Disabled)}
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == CredentialsVol || v.Name == TrustVol || v.Name == TokenVol {
			return &Refusal{fmt.Sprintf("the pod already has a volume named %s, which meshfed injects; rename it, or opt out with the label %s=%s", v.Name, LabelInject, Disabled)}
		}
	}
	return nil
}

func volumes() []corev1.Volume {
	return []corev1.Volume{
		{Name: CredentialsVol, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("4Mi"))}}},
		{Name: TrustVol, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: caapi.TrustBundleConfigMap}}}},
		{Name: TokenVol, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: caapi.Audience, ExpirationSeconds: ptr.To[int64](3600), Path: TokenFile},
		}}}}},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// restricted is the security context of what meshfed adds: the restricted Pod Security
// level, as the image's non-root user.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func agentContainer(cfg Config) corev1.Container {
	svc := func(name string, port int32) string {
		return fmt.Sprintf("%s.%s.svc:%d", name, cfg.OperatorNamespace, port)
	}
	args := []string{
		"--trust-domain=" + cfg.TrustDomain,
		"--cluster=" + cfg.Cluster,
		"--ca-address=" + svc(caapi.ServiceName, caapi.Port),
		"--xds-address=" + svc("meshfed-xds", cfg.XDSPort),
		"--token-file=" + TokenDir + "/" + TokenFile,
		"--trust-dir=" + TrustDir,
		"--credentials-dir=" + CredentialsDir,
		"--listen-xds=" + agent.ListenXDS,
		"--health-address=:" + strconv.Itoa(AgentHealthPort),
	}
	ready := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(AgentHealthPort)}},
		PeriodSeconds: 1, FailureThreshold: 1, TimeoutSeconds: 1}
	return corev1.Container{
		Name:          AgentContainer,
		Image:         cfg.AgentImage,
		Args:          args,
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Env: []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName")},
		Ports: []corev1.ContainerPort{{Name: "meshfed-health", ContainerPort: AgentHealthPort, Protocol: corev1.ProtocolTCP}},
		// The app starts once the agent has credentials and a first configuration.
		StartupProbe:   &corev1.Probe{ProbeHandler: ready.ProbeHandler, PeriodSeconds: 1, FailureThreshold: 300, TimeoutSeconds: 1},
		ReadinessProbe: ready,
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(AgentHealthPort)}},
			PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 1},
		VolumeMounts: []corev1.VolumeMount{
			{Name: CredentialsVol, MountPath: CredentialsDir},
			{Name: TrustVol, MountPath: TrustDir, ReadOnly: true},
			{Name: TokenVol, MountPath: TokenDir, ReadOnly: true},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		SecurityContext: restricted(),
	}
}

// addApp points an app container at the agent: the bootstrap, SNI on, the credentials.
// What the user set stays.
func addApp(c *corev1.Container) {
	for _, e := range []corev1.EnvVar{
		{Name: "GRPC_XDS_BOOTSTRAP", Value: CredentialsDir + "/" + agent.BootstrapFile},
		{Name: "GRPC_EXPERIMENTAL_XDS_SNI", Value: "true"},
	} {
		if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
			c.Env = append(c.Env, e)
		}
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: CredentialsVol, MountPath: CredentialsDir, ReadOnly: true})
}
