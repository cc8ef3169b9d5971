package mesh_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/controller/mesh"
	"github.com/meshfed/meshfed/testbed"
)

// TestDNSDeployment: a member's Mesh runs meshfed-dns (ConfigMap with its Corefile,
// Deployment, Service on port 53, PodDisruptionBudget, owned by the Mesh, pods that pass
// the restricted Pod Security Standard, an account that reads imports and nothing else),
// reports DNSReady with the Service's address once a replica is ready, rolls its pods when
// the TTL changes, and removes it all when disabled.
func TestDNSDeployment(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	c := tb.Clusters[0]
	ctx := context.Background()
	m := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName}, Spec: meshv1.MeshSpec{ClusterName: "east", Network: "net-1",
		DNS: meshv1.DNSSpec{Replicas: ptr.To[int32](1), TTL: ptr.To[int32](7)}}}
	must(t, c.Client.Create(ctx, m))
	key := client.ObjectKey{Namespace: meshNS, Name: mesh.DNSName}

	ready := func(reason, address string) *meshv1.Mesh {
		t.Helper()
		var got meshv1.Mesh
		testbed.Eventually(t, time.Minute, "DNSReady "+reason, func() error {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), &got); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionDNSReady)
			if cond == nil || cond.Reason != reason || cond.ObservedGeneration != got.Generation {
				return fmt.Errorf("DNSReady %+v", cond)
			}
			if address != "*" && got.Status.DNSAddress != address {
				return fmt.Errorf("dnsAddress %q, want %q", got.Status.DNSAddress, address)
			}
			return nil
		})
		return &got
	}
	got := ready(meshv1.ReasonReconciled, "*")
	var cm corev1.ConfigMap
	var dep appsv1.Deployment
	var svc corev1.Service
	var pdb policyv1.PodDisruptionBudget
	for _, obj := range []client.Object{&cm, &dep, &svc, &pdb} {
		must(t, c.Client.Get(ctx, key, obj))
		if refs := obj.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "Mesh" || !ptr.Deref(refs[0].Controller, false) {
			t.Errorf("%T owners %v, want the Mesh", obj, refs)
		}
	}
	if got.Status.DNSAddress != svc.Spec.ClusterIP || svc.Spec.Ports[0].Port != 53 || svc.Spec.Ports[0].Protocol != corev1.ProtocolUDP ||
		svc.Spec.Ports[1].Port != 53 || svc.Spec.Ports[1].Protocol != corev1.ProtocolTCP {
		t.Errorf("dnsAddress %q, Service %s ports %+v: want the Service's address, 53 over UDP and TCP", got.Status.DNSAddress, svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	if !strings.Contains(cm.Data["Corefile"], "ttl 7") || *dep.Spec.Replicas != 1 || dep.Spec.Template.Spec.ServiceAccountName != mesh.DNSName {
		t.Errorf("Corefile %q, replicas %d, account %q", cm.Data["Corefile"], *dep.Spec.Replicas, dep.Spec.Template.Spec.ServiceAccountName)
	}

	// The pod passes the restricted Pod Security Standard (server-side dry run, as the
	// namespace's default account).
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-restricted",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "psa-restricted", Name: "dns"}, Spec: *dep.Spec.Template.Spec.DeepCopy()}
	pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount = "", ""
	testbed.Eventually(t, 30*time.Second, "the namespace's default ServiceAccount", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "psa-restricted", Name: "default"}, &corev1.ServiceAccount{})
	})
	if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("the meshfed-dns pod is refused by the restricted policy: %v", err)
	}

	// Its account reads ServiceImports and EndpointSlices, and no Secret.
	for _, tc := range []struct {
		attrs authorizationv1.ResourceAttributes
		allow bool
	}{
		{authorizationv1.ResourceAttributes{Group: "multicluster.x-k8s.io", Resource: "serviceimports", Verb: "watch"}, true},
		{authorizationv1.ResourceAttributes{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "list"}, true},
		{authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: meshNS}, false},
		{authorizationv1.ResourceAttributes{Group: "multicluster.x-k8s.io", Resource: "serviceimports", Verb: "update", Namespace: "shop"}, false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:" + meshNS + ":" + mesh.DNSName, ResourceAttributes: &tc.attrs}}
		must(t, c.Client.Create(ctx, sar))
		if sar.Status.Allowed != tc.allow {
			t.Errorf("meshfed-dns may %s %s: %v, want %v", tc.attrs.Verb, tc.attrs.Resource, sar.Status.Allowed, tc.allow)
		}
	}

	// A new TTL reaches the Corefile and rolls the pods, which read it at start.
	hash := dep.Spec.Template.Annotations
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.DNS.TTL = ptr.To[int32](30)
	must(t, c.Client.Patch(ctx, got, patch))
	testbed.Eventually(t, 30*time.Second, "the Corefile and pod template of TTL 30", func() error {
		if err := c.Client.Get(ctx, key, &cm); err != nil {
			return err
		}
		if err := c.Client.Get(ctx, key, &dep); err != nil {
			return err
		}
		if !strings.Contains(cm.Data["Corefile"], "ttl 30") || fmt.Sprint(dep.Spec.Template.Annotations) == fmt.Sprint(hash) {
			return fmt.Errorf("Corefile %q, template annotations %v", cm.Data["Corefile"], dep.Spec.Template.Annotations)
		}
		return nil
	})
	ready(meshv1.ReasonReconciled, svc.Spec.ClusterIP)

	patch = client.MergeFrom(got.DeepCopy())
	got.Spec.DNS.Enabled = ptr.To(false)
	must(t, c.Client.Patch(ctx, got, patch))
	ready(meshv1.ReasonDNSDisabled, "")
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}} {
		if err := c.Client.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T still there after meshfed-dns was disabled (%v)", obj, err)
		}
	}
}
