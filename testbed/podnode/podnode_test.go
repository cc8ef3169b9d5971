package podnode

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func running() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func exited(code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

func waiting(reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func crashLooping() corev1.ContainerStatus {
	s := waiting("CrashLoopBackOff")
	s.LastTerminationState = exited(1).State
	return s
}

func TestPhaseFollowsTheKubeletsRules(t *testing.T) {
	sidecar := corev1.Container{Name: "sidecar", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}
	for _, tc := range []struct {
		name   string
		policy corev1.RestartPolicy
		inits  []corev1.Container
		init   []corev1.ContainerStatus
		main   []corev1.ContainerStatus
		want   corev1.PodPhase
	}{
		{"a container still pulling keeps the pod Pending", corev1.RestartPolicyAlways, nil, nil, []corev1.ContainerStatus{waiting("ErrImagePull")}, corev1.PodPending},
		{"a running container makes it Running", corev1.RestartPolicyAlways, nil, nil, []corev1.ContainerStatus{running()}, corev1.PodRunning},
		{"a crash loop is still Running", corev1.RestartPolicyAlways, nil, nil, []corev1.ContainerStatus{crashLooping()}, corev1.PodRunning},
		{"all exited 0 for good is Succeeded", corev1.RestartPolicyNever, nil, nil, []corev1.ContainerStatus{exited(0), exited(0)}, corev1.PodSucceeded},
		{"one failure for good is Failed", corev1.RestartPolicyNever, nil, nil, []corev1.ContainerStatus{exited(0), exited(2)}, corev1.PodFailed},
		{"an unfinished init container keeps it Pending", corev1.RestartPolicyAlways, []corev1.Container{{Name: "init"}}, []corev1.ContainerStatus{running()}, []corev1.ContainerStatus{waiting("PodInitializing")}, corev1.PodPending},
		{"a failed init container with restartPolicy Never fails it", corev1.RestartPolicyNever, []corev1.Container{{Name: "init"}}, []corev1.ContainerStatus{exited(1)}, []corev1.ContainerStatus{waiting("PodInitializing")}, corev1.PodFailed},
		{"a sidecar that has not started keeps it Pending", corev1.RestartPolicyAlways, []corev1.Container{sidecar}, []corev1.ContainerStatus{running()}, []corev1.ContainerStatus{waiting("PodInitializing")}, corev1.PodPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &corev1.PodSpec{RestartPolicy: tc.policy, InitContainers: tc.inits}
			if got := phase(spec, tc.init, tc.main, initDone(spec, tc.init)); got != tc.want {
				t.Errorf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestReadyNeedsEveryContainerAndSidecarReady(t *testing.T) {
	sidecar := corev1.Container{Name: "sidecar", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}
	spec := &corev1.PodSpec{InitContainers: []corev1.Container{sidecar}}
	side, main := running(), running()
	side.Started, side.Ready, main.Ready = ptr.To(true), false, true
	s := podStatus(podView{spec: spec, podIP: "198.18.1.130", init: []corev1.ContainerStatus{side}, main: []corev1.ContainerStatus{main}})
	if ready(s) {
		t.Error("Ready while the sidecar is not")
	}
	side.Ready = true
	s = podStatus(podView{spec: spec, podIP: "198.18.1.130", init: []corev1.ContainerStatus{side}, main: []corev1.ContainerStatus{main}, previous: s})
	if !ready(s) {
		t.Errorf("not Ready with every container ready: %+v", s.Conditions)
	}
}

func ready(s corev1.PodStatus) bool {
	for _, c := range s.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestBackOffDoublesUpToFiveMinutes(t *testing.T) {
	for failures, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, maxBackOff, maxBackOff} {
		if got := backOff(10*time.Second, failures); got != want {
			t.Errorf("backOff after %d failures = %s, want %s", failures, got, want)
		}
	}
}

func TestCommandLineFollowsKubernetesRules(t *testing.T) {
	img := imageConfig{Entrypoint: []string{"/app"}, Cmd: []string{"--default"}}
	env := []string{"NAME=web", "PORT=80"}
	for _, tc := range []struct {
		name      string
		container corev1.Container
		want      []string
	}{
		{"the image's entrypoint and cmd by default", corev1.Container{}, []string{"/app", "--default"}},
		{"args replace the cmd", corev1.Container{Args: []string{"--port=$(PORT)"}}, []string{"/app", "--port=80"}},
		{"command replaces both", corev1.Container{Command: []string{"/other"}}, []string{"/other"}},
		{"unknown references and $$ stay literal", corev1.Container{Command: []string{"/x", "$(MISSING)", "$$(NAME)", "$(NAME)"}}, []string{"/x", "$(MISSING)", "$(NAME)", "web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := commandLine(img, &tc.container, env)
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func layerTar(t *testing.T, entries ...tar.Header) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte("owned")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestAHostileImageCannotWriteOutsideItsRoot(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"a path climbing out", []tar.Header{{Name: "../../" + filepath.Base(outside) + "/escaped", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"a file behind a planted symbolic link", []tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"a hard link to a host file", []tar.Header{{Name: "hard", Typeflag: tar.TypeLink, Linkname: "../../../etc/passwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "rootfs")
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			_ = untar(layerTar(t, tc.entries...), root) // refusing or confining are both right
			if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
				t.Fatal("the image wrote outside its root")
			}
			if _, err := os.Stat("/etc/passwd"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUnsupportedNamesEachProblem(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		HostNetwork: true,
		Containers: []corev1.Container{{
			Name:            "main",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
			LivenessProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
		}},
		Volumes: []corev1.Volume{
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var"}}},
			{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
		},
	}}
	msg := unsupportedMessage(unsupported(pod))
	for _, want := range []string{"hostNetwork", `container "main": privileged`, "exec liveness probe", "hostPath /var", `volume "claim"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name %q", msg, want)
		}
	}
	if got := unsupported(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "ok"}}}}); len(got) != 0 {
		t.Errorf("a plain pod is refused: %q", got)
	}
}

func TestVolumeFilesStayInTheirVolume(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(dir, "../escaped", []byte("x"), 0o644); err == nil {
		t.Error("a key path with .. was written")
	}
	if err := writeFile(dir, "a/b", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "a/b"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a/b: %v, mode %v", err, st.Mode())
	}
}
