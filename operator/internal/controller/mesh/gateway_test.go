package mesh_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/controller/mesh"
	"github.com/meshfed/meshfed/testbed"
)

const meshNS = "meshfed-system"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestGatewayDeployment: a member's Mesh deploys its east-west gateway (Deployment,
// Service, PodDisruptionBudget, owned by the Mesh, pods that pass the restricted Pod
// Security Standard), reports the address other clusters use — the advertised one, else
// the Service's load balancer — and removes it all when disabled.
func TestGatewayDeployment(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	c := tb.Clusters[0]
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}})
	m := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName}, Spec: meshv1.MeshSpec{ClusterName: "east", Network: "net-1",
		EastWestGateway: meshv1.GatewaySpec{AdvertisedAddress: "203.0.113.7", Replicas: ptr.To[int32](3)}}}
	must(t, c.Client.Create(ctx, m))
	key := client.ObjectKey{Namespace: meshNS, Name: mesh.GatewayName}

	var dep appsv1.Deployment
	var svc corev1.Service
	var pdb policyv1.PodDisruptionBudget
	var np networkingv1.NetworkPolicy
	testbed.Eventually(t, time.Minute, "the gateway's Deployment, Service, PodDisruptionBudget and NetworkPolicy", func() error {
		for _, obj := range []client.Object{&dep, &svc, &pdb, &np} {
			if err := c.Client.Get(ctx, key, obj); err != nil {
				return err
			}
			if refs := obj.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "Mesh" || !ptr.Deref(refs[0].Controller, false) {
				return fmt.Errorf("%T owners %v, want the Mesh", obj, refs)
			}
		}
		return nil
	})
	args := dep.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--xds-address=meshfed-xds.meshfed-system.svc:15010", "--cluster=east", "--listen=:15443"} {
		if !slices.Contains(args, want) {
			t.Errorf("gateway args %v lack %s", args, want)
		}
	}
	if *dep.Spec.Replicas != 3 || svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Ports[0].Port != 15443 || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("replicas %d, Service %s port %d, PDB minAvailable %v", *dep.Spec.Replicas, svc.Spec.Type, svc.Spec.Ports[0].Port, pdb.Spec.MinAvailable)
	}

	// The NetworkPolicy admits the TLS and admin ports, and lets the gateway reach pods
	// only. (The testbed runs no NetworkPolicy engine: what it enforces is not tested here.)
	var admitted []int
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			admitted = append(admitted, p.Port.IntValue())
		}
	}
	if !slices.Equal(admitted, []int{15443, 15021}) || len(np.Spec.Egress) != 1 || len(np.Spec.Egress[0].To) != 1 ||
		np.Spec.Egress[0].To[0].NamespaceSelector == nil || np.Spec.Egress[0].To[0].IPBlock != nil {
		t.Errorf("NetworkPolicy %+v: want ingress on 15443 and 15021, egress to pods only", np.Spec)
	}

	// The pod passes the restricted Pod Security Standard (server-side dry run).
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-restricted",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "psa-restricted", Name: "gateway"}, Spec: dep.Spec.Template.Spec}
	testbed.Eventually(t, 30*time.Second, "the namespace's default ServiceAccount", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "psa-restricted", Name: "default"}, &corev1.ServiceAccount{})
	})
	if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("the gateway pod is refused by the restricted policy: %v", err)
	}
	// A gateway broken into from another network finds no Kubernetes credential: the
	// pod, as admission leaves it, mounts no service-account token.
	for _, ctr := range pod.Spec.Containers {
		for _, vm := range ctr.VolumeMounts {
			if strings.HasPrefix(vm.MountPath, "/var/run/secrets/kubernetes.io") {
				t.Errorf("the gateway mounts a service-account token (volume %s at %s)", vm.Name, vm.MountPath)
			}
		}
	}

	status := func(want string, reason string) {
		t.Helper()
		testbed.Eventually(t, 30*time.Second, fmt.Sprintf("gatewayAddress %q, GatewayReady %s", want, reason), func() error {
			var got meshv1.Mesh
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), &got); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionGatewayReady)
			if got.Status.GatewayAddress != want || cond == nil || cond.Reason != reason {
				return fmt.Errorf("gatewayAddress %q, GatewayReady %+v", got.Status.GatewayAddress, cond)
			}
			return nil
		})
	}
	// No pod runs in the testbed (no scheduler): the Deployment has no available replica.
	status("203.0.113.7", meshv1.ReasonGatewayUnavailable)

	update := func(change func(*meshv1.Mesh)) {
		t.Helper()
		must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cur meshv1.Mesh
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), &cur); err != nil {
				return err
			}
			change(&cur)
			return c.Client.Update(ctx, &cur)
		}))
	}
	// Without an advertised address, the load balancer's address counts.
	update(func(cur *meshv1.Mesh) { cur.Spec.EastWestGateway.AdvertisedAddress = "" })
	must(t, c.Client.Get(ctx, key, &svc))
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.9"}}
	must(t, c.Client.Status().Update(ctx, &svc))
	status("198.51.100.9", meshv1.ReasonGatewayUnavailable)

	update(func(cur *meshv1.Mesh) { cur.Spec.EastWestGateway.Enabled = ptr.To(false) })
	status("", meshv1.ReasonGatewayDisabled)
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}} {
		if err := c.Client.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T still there after the gateway was disabled (%v)", obj, err)
		}
	}

	// A phase that fails is reported in its condition and in Ready, and the other phases
	// still report theirs: here another controller owns a Service of the gateway's name.
	squatter := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: "squatter"}}
	testbed.MustCreate(ctx, t, c.Client, squatter)
	taken := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: mesh.GatewayName, OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "ConfigMap", Name: squatter.Name, UID: squatter.UID, Controller: ptr.To(true)}}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tls", Port: 15443}}}}
	testbed.MustCreate(ctx, t, c.Client, taken)
	// A pass with the gateway still disabled leaves the Service it does not control alone.
	update(func(cur *meshv1.Mesh) { cur.Spec.EastWestGateway.AdvertisedAddress = "203.0.113.9" })
	testbed.Eventually(t, 30*time.Second, "a pass of the disabled gateway's new generation", func() error {
		var got meshv1.Mesh
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), &got); err != nil {
			return err
		}
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observed generation %d of %d", got.Status.ObservedGeneration, got.Generation)
		}
		return nil
	})
	must(t, c.Client.Get(ctx, key, &corev1.Service{}))
	update(func(cur *meshv1.Mesh) { cur.Spec.EastWestGateway.Enabled = nil })
	testbed.Eventually(t, 30*time.Second, "GatewayReady and Ready False with ReconcileFailed naming the Service", func() error {
		var got meshv1.Mesh
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), &got); err != nil {
			return err
		}
		gw := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionGatewayReady)
		ready := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionReady)
		trust := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionTrustReady)
		switch {
		case gw == nil || gw.Reason != meshv1.ReasonReconcileFailed || !strings.Contains(gw.Message, mesh.GatewayName):
			return fmt.Errorf("GatewayReady %+v", gw)
		case ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != meshv1.ReasonReconcileFailed || !strings.Contains(ready.Message, "ConfigMap"):
			return fmt.Errorf("Ready %+v", ready)
		case trust == nil || trust.Reason != meshv1.ReasonWaitingForHub:
			return fmt.Errorf("TrustReady %+v, want the trust phase reported on its own", trust)
		case gw.ObservedGeneration != got.Generation || ready.ObservedGeneration != got.Generation:
			return fmt.Errorf("conditions observed generations %d and %d, Mesh generation %d", gw.ObservedGeneration, ready.ObservedGeneration, got.Generation)
		}
		return nil
	})
	// Once the Service is let go, the next pass takes it and the failure is gone.
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Client.Get(ctx, key, taken); err != nil {
			return err
		}
		taken.OwnerReferences = nil
		return c.Client.Update(ctx, taken)
	}))
	update(func(cur *meshv1.Mesh) { cur.Spec.EastWestGateway.AdvertisedAddress = "203.0.113.8" })
	status("203.0.113.8", meshv1.ReasonGatewayUnavailable)
}
