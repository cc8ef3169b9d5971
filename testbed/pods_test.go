package testbed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if err := c.Client.Create(ctx, Namespace("pods")); err != nil {
		t.Fatal(err)
	}

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
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
				t.Fatal(err)
			}
			dep.Spec.Replicas = ptr.To(replicas)
			if err := c.Client.Update(ctx, dep); err != nil {
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
