// Package inject decides which pods join the mesh and adds what they need, as pure
// functions of the pod, its namespace's labels and the member's settings; the mutating
// webhook (operator/webhook) calls them.
//
// Template grpc-agent (proxyless gRPC) adds meshfed-agent as a native sidecar (an init
// container that keeps running; the app starts once it has credentials and a first
// configuration), a memory volume it shares with the app for the certificate, key, trust
// bundle and the xDS bootstrap, the trust-bundle ConfigMap, and a projected
// service-account token for the CA; each app container gets GRPC_XDS_BOOTSTRAP,
// GRPC_EXPERIMENTAL_XDS_SNI and the shared volume, read-only. Template envoy adds the same
// agent (which also writes an Envoy bootstrap), an Envoy sidecar that reads its bootstrap
// and certificates from the shared volume, and an init container that redirects the pod's
// TCP traffic to Envoy (it needs NET_ADMIN); the app containers stay as they are.
package inject

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshfed/meshfed/agent"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/ca"
	"github.com/meshfed/meshfed/operator/internal/translate"
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
	// AnnotationLifetime asks for workload certificates of this lifetime (a Go duration
	// within the CA's bounds; the CA's default when absent).
	AnnotationLifetime = "meshfed.io/certificate-lifetime"
)

// Templates: proxyless gRPC, and an Envoy sidecar.
const (
	TemplateGRPCAgent = agent.ModeGRPC
	TemplateEnvoy     = agent.ModeEnvoy
)

// Names of what injection adds.
const (
	AgentContainer   = "meshfed-agent"
	ProxyContainer   = "meshfed-proxy"
	CaptureContainer = "meshfed-init"
	// EnvoyUID is the Envoy sidecar's user and AgentUID the agent's (its image's):
	// capture lets their own connections through.
	EnvoyUID = 1337
	AgentUID = 65532
	// DefaultEnvoyImage is the Envoy of the envoy template.
	DefaultEnvoyImage = "docker.io/envoyproxy/envoy:v1.36.2"
	CredentialsVol    = "meshfed-credentials"
	TrustVol          = "meshfed-trust"
	TokenVol          = "meshfed-token"
	CredentialsDir    = "/var/run/meshfed/credentials"
	TrustDir          = "/var/run/meshfed/trust"
	TokenDir          = "/var/run/secrets/meshfed/tokens"
	TokenFile         = "ca-token"
	// AgentHealthPort serves the agent's /ready, /healthz and /metrics.
	AgentHealthPort = 15021
)

// Config is what injection needs of the member.
type Config struct {
	AgentImage  string
	EnvoyImage  string
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
	if template != TemplateGRPCAgent && template != TemplateEnvoy {
		return nil, false, &Refusal{fmt.Sprintf("annotation %s=%q: the templates are %s and %s", AnnotationTemplate, template, TemplateGRPCAgent, TemplateEnvoy)}
	}
	if in.Annotations[AnnotationInjected] == template && hasContainer(in.Spec.InitContainers, AgentContainer) {
		return in, false, nil
	}
	if err := conflicts(in); err != nil {
		return nil, false, err
	}
	lifetime := in.Annotations[AnnotationLifetime]
	if lifetime != "" {
		if d, err := time.ParseDuration(lifetime); err != nil || d < ca.MinLifetime || d > ca.MaxLifetime {
			return nil, false, &Refusal{fmt.Sprintf("annotation %s=%q: want a duration from %s to %s (for example 2h)", AnnotationLifetime, lifetime, ca.MinLifetime, ca.MaxLifetime)}
		}
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
	added := []corev1.Container{agentContainer(cfg, template, lifetime)}
	if template == TemplateEnvoy {
		added = []corev1.Container{captureContainer(cfg), added[0], envoyContainer(cfg)}
	} else {
		for i := range pod.Spec.Containers {
			addApp(&pod.Spec.Containers[i])
		}
	}
	pod.Spec.InitContainers = append(added, pod.Spec.InitContainers...)
	return pod, true, nil
}

func hasContainer(cs []corev1.Container, name string) bool {
	return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}

// conflicts refuses a pod that already uses the names injection adds.
func conflicts(pod *corev1.Pod) error {
	for _, name := range []string{AgentContainer, ProxyContainer, CaptureContainer} {
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
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](AgentUID), RunAsGroup: ptr.To[int64](AgentUID),
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func agentContainer(cfg Config, template, lifetime string) corev1.Container {
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
		"--mode=" + template,
	}
	if lifetime != "" {
		args = append(args, "--lifetime="+lifetime)
	}
	probe := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(AgentHealthPort)}}
	}
	return corev1.Container{
		Name:          AgentContainer,
		Image:         cfg.AgentImage,
		Args:          args,
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Env: []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName")},
		Ports: []corev1.ContainerPort{{Name: "meshfed-health", ContainerPort: AgentHealthPort, Protocol: corev1.ProtocolTCP}},
		// What comes next (Envoy, the app) starts once the agent has credentials and a
		// first configuration; the pod is ready once Envoy is too (envoy template).
		StartupProbe:   &corev1.Probe{ProbeHandler: probe("/started"), PeriodSeconds: 1, FailureThreshold: 300, TimeoutSeconds: 1},
		ReadinessProbe: &corev1.Probe{ProbeHandler: probe("/ready"), PeriodSeconds: 1, FailureThreshold: 1, TimeoutSeconds: 1},
		LivenessProbe:  &corev1.Probe{ProbeHandler: probe("/healthz"), PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 1},
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

// envoyContainer is the Envoy sidecar of the envoy template: a native sidecar that starts
// after the agent, reads the bootstrap the agent writes and the certificates beside it
// (the directory the control plane's SDS secrets name), and runs as EnvoyUID.
func envoyContainer(cfg Config) corev1.Container {
	image := cfg.EnvoyImage
	if image == "" {
		image = DefaultEnvoyImage
	}
	sc := restricted()
	sc.RunAsUser, sc.RunAsGroup = ptr.To[int64](EnvoyUID), ptr.To[int64](EnvoyUID)
	return corev1.Container{
		Name:          ProxyContainer,
		Image:         image,
		Args:          []string{"-c", translate.EnvoyCertDir + "/" + agent.EnvoyFile, "--drain-time-s", "5", "--log-level", "warning"},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		VolumeMounts:  []corev1.VolumeMount{{Name: CredentialsVol, MountPath: translate.EnvoyCertDir, ReadOnly: true}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		SecurityContext: sc,
	}
}

// captureContainer is the init container of the envoy template that sends the pod's TCP
// traffic through Envoy (meshfed-agent capture): it needs NET_ADMIN, as root, for the
// moment it runs.
func captureContainer(cfg Config) corev1.Container {
	return corev1.Container{
		Name:  CaptureContainer,
		Image: cfg.AgentImage,
		Args: []string{"capture", "--outbound-port=15001", "--inbound-port=15006",
			"--exclude-uid=" + strconv.Itoa(EnvoyUID), "--exclude-uid=" + strconv.Itoa(AgentUID),
			"--exclude-inbound-port=" + strconv.Itoa(AgentHealthPort)},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
	}
}
