package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RequirePods skips the test when the testbed does not run pods from images (not root).
func requirePods(t *testing.T, tb *Testbed) {
	t.Helper()
	if !CanRunPods(tb) {
		t.Skip(ErrNeedsRoot.Error())
	}
}

func startPodsTestbed(t *testing.T) (*Testbed, *Cluster, string) {
	t.Helper()
	tb := StartForTest(t, Options{Pods: true, CrashBackOff: time.Second, TokenRenewAfter: 3 * time.Second})
	requirePods(t, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	image, err := tb.Image(ctx, "workload", "./testbed/cmd/workload")
	if err != nil {
		t.Fatal(err)
	}
	return tb, tb.Clusters[0], image
}

func podGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return string(body), err
}

func TestPodsFromImages(t *testing.T) {
	_, c, image := startPodsTestbed(t)
	ctx := context.Background()
	createNamespace(t, c, "pods")

	t.Run("a Deployment scales from 1 to 3 and back, and its EndpointSlices follow", func(t *testing.T) {
		svc := ClusterIPService(HTTPPort(80))
		svc.Namespace, svc.Name = "pods", "web"
		if err := c.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "pods", Name: "web"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(image)}, TerminationGracePeriodSeconds: ptr.To[int64](2)},
				},
			},
		}
		if err := c.Client.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		for _, replicas := range []int32{1, 3, 1} {
			// A patch of the replicas alone: the Deployment's status moves on meanwhile.
			scale := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
			if err := c.Client.Patch(ctx, dep, client.RawPatch(types.MergePatchType, scale)); err != nil {
				t.Fatal(err)
			}
			Eventually(t, 60*time.Second, fmt.Sprintf("%d ready endpoints that answer as their pods", replicas), func() error {
				var slices discoveryv1.EndpointSliceList
				if err := c.Client.List(ctx, &slices, client.InNamespace("pods"), client.MatchingLabels{discoveryv1.LabelServiceName: "web"}); err != nil {
					return err
				}
				var ready []discoveryv1.Endpoint
				for _, s := range slices.Items {
					for _, e := range s.Endpoints {
						if ptr.Deref(e.Conditions.Ready, false) {
							ready = append(ready, e)
						}
					}
				}
				if len(ready) != int(replicas) {
					return fmt.Errorf("%d ready endpoints", len(ready))
				}
				for _, e := range ready {
					body, err := podGet(ctx, "http://"+e.Addresses[0]+":8080/")
					if err != nil {
						return err
					}
					if !strings.Contains(body, "pod="+e.TargetRef.Name+" ") {
						return fmt.Errorf("endpoint %s of pod %s answered %q", e.Addresses[0], e.TargetRef.Name, body)
					}
				}
				return nil
			})
		}
	})
}

// createNamespace creates the namespace and waits for its default ServiceAccount, without
// which the API server refuses pods.
func createNamespace(t *testing.T, c *Cluster, name string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Client.Create(ctx, Namespace(name)); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "ServiceAccount "+name+"/default", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
	})
}

// podIn creates pod in the namespace "pods" and returns it once it has an address.
func podIn(t *testing.T, c *Cluster, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod.Namespace = "pods"
	if err := c.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "pod "+pod.Name+" has an address", func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if pod.Status.PodIP == "" {
			return fmt.Errorf("no address yet, phase %s", pod.Status.Phase)
		}
		return nil
	})
	return pod
}

func waitPodReady(t *testing.T, c *Cluster, pod *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	Eventually(t, 60*time.Second, "pod "+pod.Name+" Ready", func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if !podReady(pod) {
			return fmt.Errorf("not Ready: phase %s, containers %+v", pod.Status.Phase, pod.Status.ContainerStatuses)
		}
		return nil
	})
}

// podEvents are the messages of the pod's Events with reason.
func podEvents(ctx context.Context, c *Cluster, pod *corev1.Pod, reason string) ([]string, error) {
	var events corev1.EventList
	if err := c.Client.List(ctx, &events, client.InNamespace(pod.Namespace)); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range events.Items {
		if e.InvolvedObject.UID == pod.UID && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out, nil
}

func TestPodLifecycle(t *testing.T) {
	_, c, image := startPodsTestbed(t)
	ctx := context.Background()
	createNamespace(t, c, "pods")

	t.Run("a crashing container restarts with a growing back-off, and its previous log stays readable", func(t *testing.T) {
		pod := podIn(t, c, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "crash"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(image, "-exit-after=200ms", "-exit-code=3")}},
		})
		// The restarts as the test sees them: back-off is 1 s, then 2 s, then 4 s.
		var restartsAt []time.Time
		sawBackOff := false
		Eventually(t, 60*time.Second, "three restarts", func() error {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			st := pod.Status.ContainerStatuses[0]
			if w := st.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
				sawBackOff = true
			}
			for len(restartsAt) < int(st.RestartCount) {
				restartsAt = append(restartsAt, time.Now())
			}
			if st.RestartCount < 3 {
				return fmt.Errorf("%d restarts", st.RestartCount)
			}
			return nil
		})
		if !sawBackOff {
			t.Error("the container was never seen waiting in CrashLoopBackOff")
		}
		if last := pod.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil || last.ExitCode != 3 {
			t.Errorf("last termination %+v, want exit code 3", last)
		}
		first, second := restartsAt[1].Sub(restartsAt[0]), restartsAt[2].Sub(restartsAt[1])
		if second < first+time.Second {
			t.Errorf("back-off did not grow: %s between the first two restarts, %s between the next", first, second)
		}
		events, err := podEvents(ctx, c, pod, "BackOff")
		if err != nil || len(events) == 0 {
			t.Errorf("no BackOff Event (%v)", err)
		}
		Eventually(t, 10*time.Second, "the previous instance's log", func() error {
			logs, err := c.Kube.CoreV1().Pods("pods").GetLogs(pod.Name, &corev1.PodLogOptions{Previous: true}).DoRaw(ctx)
			if err != nil {
				return err
			}
			if !strings.Contains(string(logs), "exiting with code 3 as asked") {
				return fmt.Errorf("previous log %q", logs)
			}
			return nil
		})
	})

	t.Run("a pod deleted with a grace period gets SIGTERM first and SIGKILL when it is over", func(t *testing.T) {
		pod := podIn(t, c, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "drain"},
			Spec: corev1.PodSpec{
				Containers:                    []corev1.Container{WorkloadContainer(image, "-drain=1h")},
				TerminationGracePeriodSeconds: ptr.To[int64](30),
			},
		})
		waitPodReady(t, c, pod)
		url := "http://" + pod.Status.PodIP + ":8080/"
		deleted := time.Now()
		if err := c.Client.Delete(ctx, pod, client.GracePeriodSeconds(3)); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 10*time.Second, "the pod answers that it is terminating", func() error {
			body, err := podGet(ctx, url)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(body, "terminating") {
				return fmt.Errorf("answered %q", body)
			}
			return nil
		})
		Eventually(t, 30*time.Second, "the pod is gone", func() error {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
			if err == nil {
				return errors.New("still there")
			}
			return client.IgnoreNotFound(err)
		})
		Eventually(t, 10*time.Second, "the process no longer answers", func() error {
			if _, err := podGet(ctx, url); err == nil {
				return errors.New("still answers")
			}
			return nil
		})
		if took := time.Since(deleted); took < 3*time.Second {
			t.Errorf("the pod was gone %s after deletion, before its grace period of 3s", took)
		}
	})

	t.Run("pods deleted at once and created again get their address again and run", func(t *testing.T) {
		// The lowest free address goes first: each pod takes the one its predecessor had.
		var ips []string
		for i := range 5 {
			pod := podIn(t, c, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("again-%d", i)},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(image)}, TerminationGracePeriodSeconds: ptr.To[int64](0)},
			})
			waitPodReady(t, c, pod)
			ips = append(ips, pod.Status.PodIP)
			if err := c.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
			Eventually(t, 30*time.Second, "pod "+pod.Name+" gone", func() error {
				err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
				if err == nil {
					return errors.New("still there")
				}
				return client.IgnoreNotFound(err)
			})
		}
		if ips[0] != ips[len(ips)-1] {
			t.Logf("addresses %v: the pods did not reuse one address, the test proves less", ips)
		}
	})

	t.Run("a missing image gives ErrImagePull naming the reference", func(t *testing.T) {
		missing := c.tb.Registry + "/no-such-image:v1"
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "missing", Namespace: "pods"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(missing)}},
		}
		if err := c.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 30*time.Second, "ErrImagePull or ImagePullBackOff", func() error {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			for _, st := range pod.Status.ContainerStatuses {
				if w := st.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && strings.Contains(w.Message, missing) {
					return nil
				}
			}
			return fmt.Errorf("statuses %+v", pod.Status.ContainerStatuses)
		})
		Eventually(t, 10*time.Second, "a Failed Event naming the image", func() error {
			events, err := podEvents(ctx, c, pod, "Failed")
			if err != nil {
				return err
			}
			for _, m := range events {
				if strings.Contains(m, missing) {
					return nil
				}
			}
			return fmt.Errorf("events %q", events)
		})
	})

	t.Run("a pod that asks for what the node cannot do fails with an Event saying so", func(t *testing.T) {
		main := WorkloadContainer(image)
		main.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: "pods"},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{main},
				Volumes:    []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}}},
			},
		}
		if err := c.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 30*time.Second, "the pod Failed as Unsupported", func() error {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			if pod.Status.Phase != corev1.PodFailed || pod.Status.Reason != "Unsupported" {
				return fmt.Errorf("phase %s reason %q", pod.Status.Phase, pod.Status.Reason)
			}
			return nil
		})
		for _, want := range []string{"privileged", "hostPath /etc"} {
			if !strings.Contains(pod.Status.Message, want) {
				t.Errorf("message %q does not name %q", pod.Status.Message, want)
			}
		}
		Eventually(t, 10*time.Second, "an Unsupported Event", func() error {
			events, err := podEvents(ctx, c, pod, "Unsupported")
			if err != nil {
				return err
			}
			if len(events) == 0 {
				return errors.New("no Event yet")
			}
			return nil
		})
	})
}

func TestPodVolumesAndEnvironment(t *testing.T) {
	_, c, image := startPodsTestbed(t)
	ctx := context.Background()
	createNamespace(t, c, "pods")
	for _, obj := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "pods", Name: "creds"}, Data: map[string][]byte{"password": []byte("s3cret")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "pods", Name: "settings"}, Data: map[string]string{"mode": "blue", "extra": "x"}},
	} {
		if err := c.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	main := WorkloadContainer(image)
	main.Env = append(main.Env,
		corev1.EnvVar{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
		corev1.EnvVar{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "mode"}}},
		corev1.EnvVar{Name: "GREETING", Value: "mode $(MODE) on $(POD_NAME)"},
	)
	main.VolumeMounts = []corev1.VolumeMount{
		{Name: "creds", MountPath: "/etc/creds", ReadOnly: true},
		{Name: "settings", MountPath: "/etc/settings"},
		{Name: "info", MountPath: "/etc/podinfo"},
		{Name: "scratch", MountPath: "/scratch"},
		{Name: "token", MountPath: "/var/run/secrets/tokens"},
	}
	// An init container writes into the shared emptyDir before the others start; a native
	// sidecar serves on 8081 alongside the main container.
	initC := WorkloadContainer(image, "-exit-after=100ms", "-exit-code=0")
	initC.Name, initC.ReadinessProbe = "init", nil
	initC.Env = append(initC.Env, corev1.EnvVar{Name: "PORTS", Value: "8082"})
	sidecar := WorkloadContainer(image)
	sidecar.Name, sidecar.Ports = "sidecar", []corev1.ContainerPort{{Name: "http", ContainerPort: 8081}}
	sidecar.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	sidecar.Env = append(sidecar.Env, corev1.EnvVar{Name: "PORTS", Value: "8081"})
	pod := podIn(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "volumes", Labels: map[string]string{"tier": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{initC, sidecar},
			Containers:     []corev1.Container{main},
			Volumes: []corev1.Volume{
				{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
				{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Items: []corev1.KeyToPath{{Key: "mode", Path: "colour/mode"}}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
				}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "meshfed-test", ExpirationSeconds: ptr.To[int64](600), Path: "token"}},
				}}}},
			},
		},
	})
	waitPodReady(t, c, pod)
	base := "http://" + pod.Status.PodIP + ":8080"
	for path, want := range map[string]string{
		"/env/PASSWORD":                  "s3cret",
		"/env/MODE":                      "blue",
		"/env/GREETING":                  "mode blue on volumes",
		"/env/POD_IP":                    pod.Status.PodIP,
		"/env/KUBERNETES_SERVICE_HOST":   "10.96.0.1",
		"/file/etc/creds/password":       "s3cret",
		"/file/etc/settings/colour/mode": "blue",
		"/file/etc/podinfo/name":         "volumes",
		"/file/etc/podinfo/labels":       `tier="web"` + "\n",
		"/file/etc/hostname":             "volumes\n",
		"/file/var/run/secrets/kubernetes.io/serviceaccount/namespace": "pods",
	} {
		got, err := podGet(ctx, base+path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if _, err := podGet(ctx, base+"/file/etc/settings/extra"); err == nil {
		t.Error("the configMap volume holds a key its items did not ask for")
	}
	if got, err := podGet(ctx, "http://"+pod.Status.PodIP+":8081/"); err != nil || !strings.Contains(got, "pod=volumes") {
		t.Errorf("the sidecar answered %q, %v", got, err)
	}
	if st := pod.Status.InitContainerStatuses; len(st) != 2 || st[0].State.Terminated == nil || st[0].State.Terminated.Reason != "Completed" || st[1].State.Running == nil {
		t.Errorf("init container statuses %+v: want init Completed, sidecar running", st)
	}

	// A changed Secret and a new label reach the volumes (not the environment, as with a
	// kubelet).
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "pods", Name: "creds"}}
	if err := c.Client.Patch(ctx, secret, client.RawPatch(types.MergePatchType, []byte(`{"stringData":{"password":"rotated"}}`))); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"tier":"api"}}}`))); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "the volumes updated", func() error {
		for path, want := range map[string]string{"/file/etc/creds/password": "rotated", "/file/etc/podinfo/labels": `tier="api"` + "\n"} {
			got, err := podGet(ctx, base+path)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s = %q, want %q", path, got, want)
			}
		}
		return nil
	})
	if got, err := podGet(ctx, base+"/env/PASSWORD"); err != nil || got != "s3cret" {
		t.Errorf("the environment changed with the Secret: %q, %v", got, err)
	}

	// The projected token is the pod's, for the audience asked, and is renewed.
	readToken := func() string {
		tok, err := podGet(ctx, base+"/file/var/run/secrets/tokens/token")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	review := func(tok string) *authenticationv1.TokenReview {
		r, err := c.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{"meshfed-test"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := readToken()
	if r := review(first); !r.Status.Authenticated || r.Status.User.Username != "system:serviceaccount:pods:default" ||
		r.Status.User.Extra["authentication.kubernetes.io/pod-name"][0] != "volumes" {
		t.Fatalf("token review of the projected token: %+v", r.Status)
	}
	Eventually(t, 20*time.Second, "the projected token renewed", func() error {
		if tok := readToken(); tok == first {
			return errors.New("same token")
		} else if r := review(tok); !r.Status.Authenticated {
			return fmt.Errorf("renewed token does not authenticate: %+v", r.Status)
		}
		return nil
	})
}

func TestPodsReachServices(t *testing.T) {
	_, c, image := startPodsTestbed(t)
	ctx := context.Background()
	createNamespace(t, c, "pods")
	svc := ClusterIPService(HTTPPort(80))
	svc.Namespace, svc.Name = "pods", "web"
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	server := podIn(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server", Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(image)}},
	})
	waitPodReady(t, c, server)
	clientPod := podIn(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{WorkloadContainer(image)}},
	})
	waitPodReady(t, c, clientPod)
	via := func(url string, token bool) (string, error) {
		q := "http://" + clientPod.Status.PodIP + ":8080/get?url=" + url
		if token {
			q += "&token=1"
		}
		return podGet(ctx, q)
	}

	t.Run("a pod reaches a Service by its ClusterIP", func(t *testing.T) {
		Eventually(t, 30*time.Second, "the server through the Service", func() error {
			body, err := via("http://"+svc.Spec.ClusterIP+":80/", false)
			if err != nil {
				return err
			}
			if !strings.Contains(body, "pod=server") {
				return fmt.Errorf("answered %q", body)
			}
			return nil
		})
	})

	t.Run("a pod resolves Services through the cluster DNS", func(t *testing.T) {
		for name, want := range map[string]string{
			"kubernetes.default.svc.cluster.local": kubernetesServiceIP,
			"web.pods.svc.cluster.local":           svc.Spec.ClusterIP,
			"web":                                  svc.Spec.ClusterIP, // the namespace's search path
		} {
			Eventually(t, 30*time.Second, "resolve "+name, func() error {
				got, err := podGet(ctx, "http://"+clientPod.Status.PodIP+":8080/resolve/"+name)
				if err != nil {
					return err
				}
				if got != want {
					return fmt.Errorf("%s resolved to %q, want %q", name, got, want)
				}
				return nil
			})
		}
	})

	t.Run("a pod reaches the API server through the kubernetes Service, as its service account", func(t *testing.T) {
		Eventually(t, 30*time.Second, "the API server at "+kubernetesServiceIP, func() error {
			body, err := via("https://"+kubernetesServiceIP+":443/api", true)
			if err != nil {
				return err
			}
			if !strings.Contains(body, `"versions":["v1"]`) {
				return fmt.Errorf("answered %q", body)
			}
			return nil
		})
	})
}
