package inject

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

var cfg = Config{AgentImage: "registry.example/meshfed-agent@sha256:0", TrustDomain: "cluster.local", Cluster: "cluster-1",
	OperatorNamespace: "meshfed-system", XDSPort: 15010}

func appPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "shop"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate", Image: "app:1"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "app:1", Env: []corev1.EnvVar{{Name: "GRPC_XDS_BOOTSTRAP", Value: "/mine.json"}}},
				{Name: "metrics", Image: "exporter:1", Ports: []corev1.ContainerPort{{ContainerPort: 9100}}},
			},
		},
	}
}

func TestDecide(t *testing.T) {
	selected := labels.SelectorFromSet(labels.Set{"meshfed.io/inject": "enabled"})
	withLabel := func(k, v string) *corev1.Pod {
		p := appPod()
		p.Labels = map[string]string{k: v}
		return p
	}
	withAnnotation := func(k, v string) *corev1.Pod {
		p := appPod()
		p.Annotations = map[string]string{k: v}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   map[string]string
		want bool
	}{
		{"a pod of a selected namespace", appPod(), map[string]string{"meshfed.io/inject": "enabled"}, true},
		{"a pod of another namespace", appPod(), map[string]string{"team": "shop"}, false},
		{"a pod that opts out by label", withLabel(LabelInject, Disabled), map[string]string{"meshfed.io/inject": "enabled"}, false},
		{"a pod that opts out by annotation", withAnnotation(LabelInject, Disabled), map[string]string{"meshfed.io/inject": "enabled"}, false},
		{"a pod that opts in by label", withLabel(LabelInject, Enabled), nil, true},
		{"a pod that opts in by annotation", withAnnotation(LabelInject, Enabled), nil, true},
	} {
		if got, why := Decide(tc.pod, tc.ns, selected); got != tc.want {
			t.Errorf("%s: %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}

func TestInjectAddsTheAgentAndKeepsTheUsersContainers(t *testing.T) {
	in := appPod()
	out, changed, err := Inject(in, cfg)
	if err != nil || !changed {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	if len(out.Spec.InitContainers) != 2 || out.Spec.InitContainers[0].Name != AgentContainer || out.Spec.InitContainers[1].Name != "migrate" {
		t.Fatalf("init containers: %v", names(out.Spec.InitContainers))
	}
	a := out.Spec.InitContainers[0]
	if a.RestartPolicy == nil || *a.RestartPolicy != corev1.ContainerRestartPolicyAlways || a.StartupProbe == nil {
		t.Errorf("the agent is not a native sidecar that gates the app: restartPolicy %v, startupProbe %v", a.RestartPolicy, a.StartupProbe)
	}
	if !strings.Contains(strings.Join(a.Args, " "), "--ca-address=meshfed-ca.meshfed-system.svc:15012") {
		t.Errorf("agent args %v", a.Args)
	}
	for i, c := range out.Spec.Containers {
		orig := in.Spec.Containers[i]
		// What injection may change: env it adds and the credentials mount.
		c.Env, c.VolumeMounts = orig.Env, orig.VolumeMounts
		if !apiequality.Semantic.DeepEqual(c, orig) {
			t.Errorf("container %s changed beyond env and mounts", orig.Name)
		}
	}
	app := out.Spec.Containers[0]
	if v := env(app, "GRPC_XDS_BOOTSTRAP"); v != "/mine.json" {
		t.Errorf("the user's GRPC_XDS_BOOTSTRAP became %q", v)
	}
	if v := env(out.Spec.Containers[1], "GRPC_XDS_BOOTSTRAP"); v != CredentialsDir+"/bootstrap.json" {
		t.Errorf("GRPC_XDS_BOOTSTRAP %q", v)
	}
	if v := env(app, "GRPC_EXPERIMENTAL_XDS_SNI"); v != "true" {
		t.Errorf("GRPC_EXPERIMENTAL_XDS_SNI %q", v)
	}
	if !apiequality.Semantic.DeepEqual(in, appPod()) {
		t.Error("Inject changed its input")
	}

	again, changed, err := Inject(out, cfg)
	if err != nil || changed || !apiequality.Semantic.DeepEqual(again, out) {
		t.Errorf("a second injection changed the pod (changed %v, err %v)", changed, err)
	}
}

func TestInjectRefusesWhatItCannotHandle(t *testing.T) {
	named := appPod()
	named.Spec.Containers[1].Name = AgentContainer
	volume := appPod()
	volume.Spec.Volumes = []corev1.Volume{{Name: CredentialsVol}}
	host := appPod()
	host.Spec.HostNetwork = true
	template := appPod()
	template.Annotations = map[string]string{AnnotationTemplate: "sidecar-of-my-own"}
	short := appPod()
	short.Annotations = map[string]string{AnnotationLifetime: "10s"}
	garbage := appPod()
	garbage.Annotations = map[string]string{AnnotationLifetime: "forever"}
	for name, pod := range map[string]*corev1.Pod{"a container named meshfed-agent": named, "a volume named meshfed-credentials": volume,
		"the host network": host, "an unknown template": template, "a lifetime below the CA's": short, "a lifetime that is no duration": garbage} {
		_, _, err := Inject(pod, cfg)
		var r *Refusal
		if !errors.As(err, &r) {
			t.Errorf("%s: err %v, want a refusal", name, err)
			continue
		}
		t.Logf("%s: %s", name, r.Message)
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
