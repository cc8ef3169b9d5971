package inject

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/operator/bootstrap"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestTemplatesGolden: the pod each template makes of the same app pod equals its
// reviewed golden file (go test -run TestTemplatesGolden -update rewrites them).
func TestTemplatesGolden(t *testing.T) {
	for _, template := range []string{TemplateGRPCAgent, TemplateEnvoy} {
		pod := appPod()
		pod.Annotations = map[string]string{AnnotationTemplate: template}
		out, _, err := Inject(pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := yaml.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", template+".golden.yaml")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("template %s: the pod differs from %s (run with -update and review the diff)", template, path)
		}
	}
}

// TestTheEnvoyTemplatePointsAtACheckedBootstrap follows the Envoy sidecar's -c path
// through its mounts to the volume the agent writes, and checks the bootstrap the agent
// writes there with its arguments (bootstrap.CheckEnvoy).
func TestTheEnvoyTemplatePointsAtACheckedBootstrap(t *testing.T) {
	pod := appPod()
	pod.Annotations = map[string]string{AnnotationTemplate: TemplateEnvoy}
	out, _, err := Inject(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	containers := map[string]corev1.Container{}
	for _, c := range out.Spec.InitContainers {
		containers[c.Name] = c
	}
	proxy, agentC := containers[ProxyContainer], containers[AgentContainer]
	i := slices.Index(proxy.Args, "-c")
	if i < 0 || i+1 == len(proxy.Args) {
		t.Fatalf("Envoy's args %v name no bootstrap", proxy.Args)
	}
	// The file, as the agent sees it: the same volume, under the agent's mount.
	path := proxy.Args[i+1]
	var volume, rel string
	for _, m := range proxy.VolumeMounts {
		if r, ok := strings.CutPrefix(path, m.MountPath+"/"); ok {
			volume, rel = m.Name, r
		}
	}
	agentDir := ""
	for _, m := range agentC.VolumeMounts {
		if m.Name == volume {
			agentDir = m.MountPath
		}
	}
	arg := func(name string) string {
		for _, a := range agentC.Args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	if agentDir == "" || arg("credentials-dir") != agentDir || arg("mode") != TemplateEnvoy || rel != agent.EnvoyFile {
		t.Fatalf("Envoy reads %s (volume %s), but the agent writes %s in %s (mode %s)", path, volume, agent.EnvoyFile, arg("credentials-dir"), arg("mode"))
	}
	b, err := bootstrap.Envoy(bootstrap.EnvoyOptions{XDSAddress: arg("listen-xds"), NodeID: "app.shop", Cluster: arg("cluster"), AdminPort: agent.EnvoyAdminPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := bootstrap.CheckEnvoy(b); err != nil {
		t.Errorf("the bootstrap the agent writes: %v", err)
	}
}
