package clustersetip_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/join"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func export(t *testing.T, c *testbed.Cluster, name string, svc *corev1.Service) {
	t.Helper()
	svc.Namespace, svc.Name = "shop", name
	testbed.MustCreate(context.Background(), t, c.Client, svc)
	testbed.MustCreate(context.Background(), t, c.Client, testbed.ServiceExport("shop", name))
}

// waitIPs waits until the import of name exists and check accepts it.
func waitImport(t *testing.T, c *testbed.Cluster, name string, check func(*mcsv1beta1.ServiceImport) error) *mcsv1beta1.ServiceImport {
	t.Helper()
	var si mcsv1beta1.ServiceImport
	testbed.Eventually(t, 30*time.Second, "ServiceImport shop/"+name, func() error {
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: name}, &si); err != nil {
			return err
		}
		return check(&si)
	})
	return &si
}

// inRange accepts an import holding one IPv4 address of r, and Ready.
func inRange(r string) func(*mcsv1beta1.ServiceImport) error {
	prefix := netip.MustParsePrefix(r)
	return func(si *mcsv1beta1.ServiceImport) error {
		if len(si.Spec.IPs) != 1 {
			return fmt.Errorf("ips %v", si.Spec.IPs)
		}
		if a, err := netip.ParseAddr(si.Spec.IPs[0]); err != nil || !prefix.Contains(a) {
			return fmt.Errorf("ip %s not in %s", si.Spec.IPs[0], r)
		}
		return ready(metav1.ConditionTrue, string(mcsv1beta1.ServiceImportReasonReady))(si)
	}
}

// ready accepts an import whose Ready condition has status and reason, for its generation.
func ready(status metav1.ConditionStatus, reason string) func(*mcsv1beta1.ServiceImport) error {
	return func(si *mcsv1beta1.ServiceImport) error {
		c := meta.FindStatusCondition(si.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady))
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != si.Generation {
			return fmt.Errorf("Ready %+v, want %s/%s", c, status, reason)
		}
		return nil
	}
}

func expectNoIPs(si *mcsv1beta1.ServiceImport) error {
	if si.Spec.Type != mcsv1beta1.Headless || len(si.Spec.IPs) != 0 {
		return fmt.Errorf("headless import: type %s, ips %v; want Headless without ips", si.Spec.Type, si.Spec.IPs)
	}
	return nil
}

func waitCondition(t *testing.T, c *testbed.Cluster, status metav1.ConditionStatus, reason, mentions string) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, fmt.Sprintf("Mesh ClusterSetIPsReady %s/%s", status, reason), func() error {
		var m meshv1.Mesh
		if err := c.Client.Get(context.Background(), client.ObjectKey{Name: meshv1.MeshSingletonName}, &m); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionClusterSetIPsReady)
		if cond == nil || cond.Status != status || cond.Reason != reason || !strings.Contains(cond.Message, mentions) {
			return fmt.Errorf("condition %+v", cond)
		}
		return nil
	})
}

// TestClusterSetIPs: each ClusterSetIP service a member imports gets an address of the
// Mesh's range, which stays through export changes and an operator restart; a headless one
// gets none; a full range is reported on the Mesh, and a freed address is given again.
func TestClusterSetIPs(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	c := tb.Clusters[0]
	ctx := context.Background()
	const first = "243.7.0.0/29"
	_, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: c.Client, HubNamespace: testbed.MeshfedNamespace})
	must(t, err)
	testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: "net-1", ClusterSetIPs: meshv1.ClusterSetIPsSpec{Ranges: []string{first}}}})
	testbed.MustCreate(ctx, t, c.Client, &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: testbed.MeshfedNamespace, Name: "global"},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned},
			Members: []meshv1.Member{{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}}}}})
	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))

	var cart *mcsv1beta1.ServiceImport
	t.Run("a ClusterSetIP import gets an address of the range, a headless one none", func(t *testing.T) {
		headless := testbed.ClusterIPService(testbed.HTTPPort(80))
		headless.Spec.ClusterIP = corev1.ClusterIPNone
		export(t, c, "db", headless)
		export(t, c, "cart", testbed.ClusterIPService(testbed.HTTPPort(80)))
		cart = waitImport(t, c, "cart", inRange(first))
		waitImport(t, c, "db", func(si *mcsv1beta1.ServiceImport) error {
			return errors.Join(expectNoIPs(si), ready(metav1.ConditionTrue, string(mcsv1beta1.ServiceImportReasonReady))(si))
		})
		waitCondition(t, c, metav1.ConditionTrue, meshv1.ReasonAllocated, "")
	})

	t.Run("the address stays through an export change and an operator restart", func(t *testing.T) {
		var svc corev1.Service
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &svc))
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 9090})
		must(t, c.Client.Update(ctx, &svc))
		waitImport(t, c, "cart", func(si *mcsv1beta1.ServiceImport) error {
			if len(si.Spec.Ports) != 2 {
				return fmt.Errorf("%d ports", len(si.Spec.Ports))
			}
			if !slices.Equal(si.Spec.IPs, cart.Spec.IPs) {
				t.Fatalf("the export's change moved the address: %v, was %v", si.Spec.IPs, cart.Spec.IPs)
			}
			return nil
		})
		must(t, c.StopOperator(ctx))
		must(t, c.StartOperator(ctx))
		export(t, c, "after-restart", testbed.ClusterIPService(testbed.HTTPPort(80)))
		after := waitImport(t, c, "after-restart", inRange(first))
		if after.Spec.IPs[0] == cart.Spec.IPs[0] {
			t.Errorf("two imports hold %s", after.Spec.IPs[0])
		}
		waitImport(t, c, "cart", func(si *mcsv1beta1.ServiceImport) error {
			if !slices.Equal(si.Spec.IPs, cart.Spec.IPs) {
				return fmt.Errorf("after the restart: %v, was %v", si.Spec.IPs, cart.Spec.IPs)
			}
			return nil
		})
	})

	t.Run("a full range is reported, and a freed address is given again", func(t *testing.T) {
		// A /30 holds two addresses: cart and after-restart move into it, extra finds none.
		const small = "243.9.0.0/30"
		var m meshv1.Mesh
		must(t, c.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &m))
		m.Spec.ClusterSetIPs.Ranges = []string{small}
		must(t, c.Client.Update(ctx, &m))
		waitImport(t, c, "cart", inRange(small))
		waitImport(t, c, "after-restart", inRange(small))
		export(t, c, "extra", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitCondition(t, c, metav1.ConditionFalse, meshv1.ReasonRangeExhausted, "shop/extra")
		waitImport(t, c, "extra", ready(metav1.ConditionFalse, meshv1.ReasonRangeExhausted))
		var events corev1.EventList
		testbed.Eventually(t, 10*time.Second, "a RangeExhausted Event on shop/extra", func() error {
			must(t, c.Client.List(ctx, &events, client.InNamespace("shop"), client.MatchingFields{"involvedObject.name": "extra"}))
			for _, e := range events.Items {
				if e.Reason == meshv1.ReasonRangeExhausted {
					return nil
				}
			}
			return fmt.Errorf("%d events", len(events.Items))
		})
		must(t, c.Client.Delete(ctx, testbed.ServiceExport("shop", "after-restart")))
		waitImport(t, c, "extra", inRange(small))
		waitCondition(t, c, metav1.ConditionTrue, meshv1.ReasonAllocated, "")
		// Every import has been through the controller since the ranges changed: the
		// headless one still holds nothing.
		waitImport(t, c, "db", func(si *mcsv1beta1.ServiceImport) error {
			if err := expectNoIPs(si); err != nil {
				t.Error(err)
			}
			return nil
		})
	})
}
