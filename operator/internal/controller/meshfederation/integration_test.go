package meshfederation_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

const hubNS = "meshfed-system"

// federation is a 3-cluster testbed whose first cluster is the hub of MeshFederation
// meshfed-system/global with all three as members.
type federation struct {
	tb      *testbed.Testbed
	hub     *testbed.Cluster
	members []*testbed.Cluster
}

func startFederation(t testing.TB, grace time.Duration) *federation {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 3, Operator: true,
		OperatorArgs: []string{"--member-grace-period=" + grace.String()}})
	f := &federation{tb: tb, hub: tb.Clusters[0], members: tb.Clusters}
	ctx := context.Background()
	testbed.MustCreate(ctx, t, f.hub.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubNS}})
	fed := &meshv1.MeshFederation{
		ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "global"},
		Spec:       meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned}},
	}
	for i, c := range tb.Clusters {
		// The hub gets exactly the access `meshfedctl join` grants, nothing more.
		if _, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config,
			Hub: f.hub.Client, HubNamespace: hubNS}); err != nil {
			t.Fatal(err)
		}
		testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{
			ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
			Spec:       meshv1.MeshSpec{ClusterName: c.Name, Network: fmt.Sprintf("net-%d", i+1)},
		})
		fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: c.Name,
			KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}})
	}
	testbed.MustCreate(ctx, t, f.hub.Client, fed)
	for _, c := range tb.Clusters {
		testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	}
	f.waitReady(t)
	return f
}

// updateFederation applies change to the latest MeshFederation, retrying on conflicts with
// the hub's own writes.
// updateFederation changes the MeshFederation's spec with a merge patch: the hub writes
// its status all along, and a patch of what changed does not race with that.
func (f *federation) updateFederation(t testing.TB, change func(*meshv1.MeshFederation)) {
	t.Helper()
	fed := f.get(t)
	before := fed.DeepCopy()
	change(fed)
	if err := f.hub.Client.Patch(context.Background(), fed, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

func (f *federation) get(t testing.TB) *meshv1.MeshFederation {
	t.Helper()
	var fed meshv1.MeshFederation
	if err := f.hub.Client.Get(context.Background(), client.ObjectKey{Namespace: hubNS, Name: "global"}, &fed); err != nil {
		t.Fatal(err)
	}
	return &fed
}

func (f *federation) waitReady(t testing.TB) {
	t.Helper()
	testbed.Eventually(t, 60*time.Second, "MeshFederation Ready", func() error {
		fed := f.get(t)
		c := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != fed.Generation {
			return fmt.Errorf("Ready condition %+v", c)
		}
		return nil
	})
}

// exportService creates a Service (unless svc is nil) and a ServiceExport for it.
func exportService(t *testing.T, c *testbed.Cluster, ns, name string, svc *corev1.Service) {
	t.Helper()
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace(ns))
	if svc != nil {
		svc.Namespace, svc.Name = ns, name
		testbed.MustCreate(ctx, t, c.Client, svc)
	}
	testbed.MustCreate(ctx, t, c.Client, testbed.ServiceExport(ns, name))
}

func unexport(t *testing.T, c *testbed.Cluster, ns, name string) {
	t.Helper()
	if err := c.Client.Delete(context.Background(), testbed.ServiceExport(ns, name)); err != nil {
		t.Fatal(err)
	}
}

// waitImport waits until every cluster in cs has the ServiceImport, checked by check.
func waitImport(t *testing.T, cs []*testbed.Cluster, ns, name string, check func(*mcsv1beta1.ServiceImport) error) {
	t.Helper()
	for _, c := range cs {
		testbed.Eventually(t, 30*time.Second, fmt.Sprintf("ServiceImport %s/%s in %s", ns, name, c.Name), func() error {
			var si mcsv1beta1.ServiceImport
			if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &si); err != nil {
				return err
			}
			return check(&si)
		})
	}
}

func waitNoImport(t *testing.T, cs []*testbed.Cluster, ns, name string) {
	t.Helper()
	for _, c := range cs {
		testbed.Eventually(t, 30*time.Second, fmt.Sprintf("no ServiceImport %s/%s in %s", ns, name, c.Name), func() error {
			err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &mcsv1beta1.ServiceImport{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%w)", err)
		})
	}
}

func waitExportCondition(t *testing.T, c *testbed.Cluster, ns, name string, typ mcsv1beta1.ServiceExportConditionType, status metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, fmt.Sprintf("%s: ServiceExport %s/%s %s=%s/%s", c.Name, ns, name, typ, status, reason), func() error {
		var se mcsv1beta1.ServiceExport
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &se); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(se.Status.Conditions, string(typ))
		if cond == nil || cond.Status != status || cond.Reason != string(reason) {
			return fmt.Errorf("condition is %+v", cond)
		}
		if cond.ObservedGeneration != se.Generation {
			return fmt.Errorf("condition is for generation %d, object is at %d", cond.ObservedGeneration, se.Generation)
		}
		return nil
	})
}

func ports(si *mcsv1beta1.ServiceImport) string {
	var out []string
	for _, p := range si.Spec.Ports {
		out = append(out, fmt.Sprintf("%s:%d/%s", p.Name, p.Port, p.Protocol))
	}
	return strings.Join(out, ",")
}

func clusters(si *mcsv1beta1.ServiceImport) string {
	var out []string
	for _, c := range si.Status.Clusters {
		out = append(out, c.Cluster)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func expect(got, want string) error {
	if got != want {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

// TestServiceFederation checks MCS semantics end to end on three real clusters with the hub
// operator running in the first.
func TestServiceFederation(t *testing.T) {
	f := startFederation(t, 5*time.Second)
	a, b, c := f.members[0], f.members[1], f.members[2]
	ctx := context.Background()

	t.Run("the joined kubeconfig grants the hub nothing beyond its rules", func(t *testing.T) {
		var secret corev1.Secret
		if err := f.hub.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: join.SecretName(b.Name)}, &secret); err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.RESTConfigFromKubeConfig(secret.Data["kubeconfig"])
		if err != nil {
			t.Fatal(err)
		}
		hubView, err := client.New(cfg, client.Options{Scheme: testbed.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		if err := hubView.List(ctx, &mcsv1beta1.ServiceExportList{}); err != nil {
			t.Errorf("the hub cannot list ServiceExports: %v", err)
		}
		if err := hubView.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing Secrets: got %v, want Forbidden", err)
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}}
		if err := hubView.Delete(ctx, svc); !apierrors.IsForbidden(err) {
			t.Errorf("deleting a Service: got %v, want Forbidden", err)
		}
		if err := hubView.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "x"}}); !apierrors.IsForbidden(err) {
			t.Errorf("creating a ServiceExport: got %v, want Forbidden", err)
		}
	})

	t.Run("an exported ClusterIP Service is imported as ClusterSetIP with its ports in every cluster", func(t *testing.T) {
		exportService(t, a, "shop", "cart", testbed.ClusterIPService(testbed.HTTPPort(80), corev1.ServicePort{Name: "grpc", Port: 9090}))
		waitImport(t, f.members, "shop", "cart", func(si *mcsv1beta1.ServiceImport) error {
			if si.Spec.Type != mcsv1beta1.ClusterSetIP {
				return fmt.Errorf("type %s", si.Spec.Type)
			}
			if err := expect(ports(si), "http:80/TCP,grpc:9090/TCP"); err != nil {
				return err
			}
			return expect(clusters(si), a.Name)
		})
		waitExportCondition(t, a, "shop", "cart", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid)
		waitExportCondition(t, a, "shop", "cart", mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonExported)
		waitExportCondition(t, a, "shop", "cart", mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoConflicts)

		unexport(t, a, "shop", "cart")
		waitNoImport(t, f.members, "shop", "cart")
	})

	t.Run("with two exporters the import lives until the last one unexports", func(t *testing.T) {
		exportService(t, a, "shop", "search", testbed.ClusterIPService(testbed.HTTPPort(80)))
		exportService(t, b, "shop", "search", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "shop", "search", func(si *mcsv1beta1.ServiceImport) error {
			return expect(clusters(si), a.Name+","+b.Name)
		})
		unexport(t, a, "shop", "search")
		waitImport(t, f.members, "shop", "search", func(si *mcsv1beta1.ServiceImport) error {
			return expect(clusters(si), b.Name)
		})
		unexport(t, b, "shop", "search")
		waitNoImport(t, f.members, "shop", "search")
	})

	t.Run("an export without a Service is NoService and one of an ExternalName Service is InvalidServiceType", func(t *testing.T) {
		exportService(t, b, "shop", "ghost", nil)
		waitExportCondition(t, b, "shop", "ghost", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoService)
		exportService(t, b, "shop", "legacy", &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "legacy.example.com"}})
		waitExportCondition(t, b, "shop", "legacy", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonInvalidServiceType)
		waitNoImport(t, f.members, "shop", "ghost")
		waitNoImport(t, f.members, "shop", "legacy")
	})

	t.Run("a port conflict keeps the oldest export's port and is reported on every export", func(t *testing.T) {
		exportService(t, a, "shop", "orders", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "shop", "orders", func(si *mcsv1beta1.ServiceImport) error { return expect(ports(si), "http:80/TCP") })
		exportService(t, c, "shop", "orders", testbed.ClusterIPService(testbed.HTTPPort(8080)))
		for _, cl := range []*testbed.Cluster{a, c} {
			waitExportCondition(t, cl, "shop", "orders", mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonPortConflict)
		}
		waitImport(t, f.members, "shop", "orders", func(si *mcsv1beta1.ServiceImport) error {
			if err := expect(clusters(si), a.Name+","+c.Name); err != nil {
				return err
			}
			return expect(ports(si), "http:80/TCP")
		})
	})

	t.Run("ClusterIP exported before headless stays ClusterSetIP with a TypeConflict", func(t *testing.T) {
		exportService(t, a, "shop", "catalog", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "shop", "catalog", func(*mcsv1beta1.ServiceImport) error { return nil })
		headless := testbed.ClusterIPService(testbed.HTTPPort(80))
		headless.Spec.ClusterIP = corev1.ClusterIPNone
		exportService(t, b, "shop", "catalog", headless)
		for _, cl := range []*testbed.Cluster{a, b} {
			waitExportCondition(t, cl, "shop", "catalog", mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonTypeConflict)
		}
		waitImport(t, f.members, "shop", "catalog", func(si *mcsv1beta1.ServiceImport) error {
			return expect(string(si.Spec.Type), string(mcsv1beta1.ClusterSetIP))
		})
	})

	t.Run("a session affinity conflict is reported", func(t *testing.T) {
		sticky := testbed.ClusterIPService(testbed.HTTPPort(80))
		sticky.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		exportService(t, b, "shop", "sessions", sticky)
		waitImport(t, f.members, "shop", "sessions", func(*mcsv1beta1.ServiceImport) error { return nil })
		exportService(t, c, "shop", "sessions", testbed.ClusterIPService(testbed.HTTPPort(80)))
		for _, cl := range []*testbed.Cluster{b, c} {
			waitExportCondition(t, cl, "shop", "sessions", mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonSessionAffinityConflict)
		}
		waitImport(t, f.members, "shop", "sessions", func(si *mcsv1beta1.ServiceImport) error {
			return expect(string(si.Spec.SessionAffinity), string(corev1.ServiceAffinityClientIP))
		})
	})

	t.Run("an export from a namespace the export policy does not allow is refused and not imported", func(t *testing.T) {
		for _, m := range f.members {
			testbed.MustCreate(ctx, t, m.Client, testbed.Namespace("outside"))
		}
		exportService(t, a, "outside", "spy", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, []*testbed.Cluster{b, c}, "outside", "spy", func(*mcsv1beta1.ServiceImport) error { return nil })
		shopImports := importUIDs(t, b)
		delete(shopImports, "outside/spy")

		f.updateFederation(t, func(fed *meshv1.MeshFederation) {
			fed.Spec.ExportPolicy.AllowedNamespaces = []string{"shop", "billing", "temp"}
		})
		waitExportCondition(t, a, "outside", "spy", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, mcs.ReasonNamespaceNotAllowed)
		waitNoImport(t, []*testbed.Cluster{b, c}, "outside", "spy")
		for key, uid := range importUIDs(t, b) {
			if shopImports[key] != uid {
				t.Errorf("import %s changed (%s -> %s) though its namespace is allowed", key, shopImports[key], uid)
			}
		}

		f.updateFederation(t, func(fed *meshv1.MeshFederation) { fed.Spec.ExportPolicy.AllowedNamespaces = nil })
		waitExportCondition(t, a, "outside", "spy", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid)
		waitImport(t, []*testbed.Cluster{b, c}, "outside", "spy", func(*mcsv1beta1.ServiceImport) error { return nil })
	})

	t.Run("a member without the service's namespace gets the import once the namespace exists", func(t *testing.T) {
		testbed.MustCreate(ctx, t, a.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}})
		exportService(t, a, "billing", "invoices", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, []*testbed.Cluster{a}, "billing", "invoices", func(*mcsv1beta1.ServiceImport) error { return nil })
		testbed.Eventually(t, 30*time.Second, "status names the missing namespace", func() error {
			for _, ms := range f.get(t).Status.Members {
				if ms.Name == b.Name && strings.Contains(ms.Message, "billing") {
					return nil
				}
			}
			return fmt.Errorf("members: %+v", f.get(t).Status.Members)
		})
		if err := b.Client.Get(ctx, client.ObjectKey{Name: "billing"}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
			t.Fatalf("meshfed created namespace billing in %s (err=%v); it must not", b.Name, err)
		}
		testbed.MustCreate(ctx, t, b.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}})
		waitImport(t, []*testbed.Cluster{b}, "billing", "invoices", func(*mcsv1beta1.ServiceImport) error { return nil })
		testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}})
		f.waitReady(t)
	})

	t.Run("every member gets a MeshPeer for each other member", func(t *testing.T) {
		for _, m := range f.members {
			testbed.Eventually(t, 30*time.Second, "MeshPeers in "+m.Name, func() error {
				var peers meshv1.MeshPeerList
				if err := m.Client.List(ctx, &peers); err != nil {
					return err
				}
				var got []string
				for _, p := range peers.Items {
					connected := meta.IsStatusConditionTrue(p.Status.Conditions, meshv1.ConditionConnected)
					got = append(got, fmt.Sprintf("%s@%s:%v", p.Spec.ClusterName, p.Spec.Network, connected))
				}
				sort.Strings(got)
				var want []string
				for i, o := range f.members {
					if o != m {
						want = append(want, fmt.Sprintf("%s@net-%d:true", o.Name, i+1))
					}
				}
				return expect(strings.Join(got, " "), strings.Join(want, " "))
			})
		}
	})

	t.Run("endpoint readiness in one cluster reaches the EndpointSlices of the others", func(t *testing.T) {
		testbed.RequireWorkloads(t, f.tb)
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Spec.Selector = map[string]string{"app": "ratings"}
		exportService(t, a, "shop", "ratings", svc)
		w, err := a.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "ratings-0",
			Labels: map[string]string{"app": "ratings"}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, ready := range []bool{true, false, true} {
			if err := w.SetReady(ctx, ready); err != nil {
				t.Fatal(err)
			}
			for _, m := range []*testbed.Cluster{b, c} {
				waitRemoteEndpoint(t, m, "shop", "ratings", a.Name, "net-1", w.IP, ready)
			}
		}
	})

	t.Run("an EndpointSlice name held by an object meshfed did not write is reported, never skipped", func(t *testing.T) {
		testbed.RequireWorkloads(t, f.tb)
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Namespace, svc.Name, svc.Spec.Selector = "shop", "squatted", map[string]string{"app": "squatted"}
		testbed.MustCreate(ctx, t, a.Client, svc)
		var source discoveryv1.EndpointSlice
		testbed.Eventually(t, 30*time.Second, "the Service's own EndpointSlice in "+a.Name, func() error {
			var slices discoveryv1.EndpointSliceList
			if err := a.Client.List(ctx, &slices, client.InNamespace("shop"), client.MatchingLabels{discoveryv1.LabelServiceName: "squatted"}); err != nil {
				return err
			}
			if len(slices.Items) != 1 {
				return fmt.Errorf("%d slices", len(slices.Items))
			}
			source = slices.Items[0]
			return nil
		})
		// Another writer takes, in b, the name of the mirror of a's endpoints, with a decoy.
		squatter := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: mcs.MirrorSliceName("squatted", a.Name, source.Name)},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.66"}}},
		}
		testbed.MustCreate(ctx, t, b.Client, squatter)
		testbed.MustCreate(ctx, t, a.Client, testbed.ServiceExport("shop", "squatted"))
		w, err := a.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "squatted-0",
			Labels: map[string]string{"app": "squatted"}, Ports: []corev1.ContainerPort{{ContainerPort: 8080}}})
		if err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 30*time.Second, "the held name reported in the status of "+b.Name, func() error {
			fed := f.get(t)
			for _, ms := range fed.Status.Members {
				if ms.Name == b.Name && strings.Contains(ms.Message, "EndpointSlice shop/"+squatter.Name) && strings.Contains(ms.Message, "meshfed did not write") {
					if ready := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionReady); ready.Status != metav1.ConditionFalse {
						return fmt.Errorf("Ready is %s", ready.Status)
					}
					return nil
				}
			}
			return fmt.Errorf("members: %+v", fed.Status.Members)
		})
		waitRemoteEndpoint(t, c, "shop", "squatted", a.Name, "net-1", w.IP, true) // the other members are served
		if err := b.Client.Delete(ctx, squatter); err != nil {
			t.Fatal(err)
		}
		waitRemoteEndpoint(t, b, "shop", "squatted", a.Name, "net-1", w.IP, true)
		f.waitReady(t)
	})

	t.Run("a member with a broken kubeconfig Secret is reported by name while the others keep syncing", func(t *testing.T) {
		testbed.MustCreate(ctx, t, f.hub.Client, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "broken-kubeconfig"},
			Data:       map[string][]byte{"kubeconfig": []byte("this is not a kubeconfig")},
		})
		f.updateFederation(t, func(fed *meshv1.MeshFederation) {
			fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: "broken", KubeconfigSecretRef: meshv1.SecretKeyRef{Name: "broken-kubeconfig"}})
		})
		testbed.Eventually(t, 30*time.Second, "condition names the broken Secret", func() error {
			fed := f.get(t)
			cond := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionReady)
			if cond == nil || cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "Secret meshfed-system/broken-kubeconfig") {
				return fmt.Errorf("Ready condition %+v", cond)
			}
			return nil
		})
		exportService(t, c, "shop", "while-broken", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "shop", "while-broken", func(*mcsv1beta1.ServiceImport) error { return nil })

		f.updateFederation(t, func(fed *meshv1.MeshFederation) { fed.Spec.Members = fed.Spec.Members[:3] })
		f.waitReady(t)
	})

	t.Run("a kubeconfig that would have the hub send its own token elsewhere is refused, naming the field", func(t *testing.T) {
		// The attack: a Secret whose kubeconfig points at the attacker's server with the
		// hub's own service-account token (a file on the hub's disk). The attacker's server
		// listens where the operator's pods reach the host.
		var mu sync.Mutex
		var stolen []string
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if a := r.Header.Get("Authorization"); a != "" {
				mu.Lock()
				stolen = append(stolen, a)
				mu.Unlock()
			}
			http.NotFound(w, r)
		}))
		u, err := url.Parse(f.hub.Server)
		must(t, err)
		lis, err := net.Listen("tcp", net.JoinHostPort(u.Hostname(), "0"))
		must(t, err)
		srv.Listener = lis
		srv.StartTLS()
		defer srv.Close()
		evil := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: evil, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: evil, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]
contexts: [{name: evil, context: {cluster: evil, user: evil}}]
current-context: evil
`, srv.URL)
		testbed.MustCreate(ctx, t, f.hub.Client, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "evil-kubeconfig"},
			Data:       map[string][]byte{"kubeconfig": []byte(evil)},
		})
		f.updateFederation(t, func(fed *meshv1.MeshFederation) {
			fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: "evil", KubeconfigSecretRef: meshv1.SecretKeyRef{Name: "evil-kubeconfig"}})
		})
		testbed.Eventually(t, 30*time.Second, "the refusal names the fields", func() error {
			cond := meta.FindStatusCondition(f.get(t).Status.Conditions, meshv1.ConditionReady)
			if cond == nil || !strings.Contains(cond.Message, `users[\"evil\"].tokenFile`) && !strings.Contains(cond.Message, `users["evil"].tokenFile`) ||
				!strings.Contains(cond.Message, "insecure-skip-tls-verify") {
				return fmt.Errorf("Ready condition %+v", cond)
			}
			return nil
		})
		mu.Lock()
		if len(stolen) > 0 {
			t.Errorf("the hub sent %d requests with credentials to the kubeconfig's server", len(stolen))
		}
		mu.Unlock()
		f.updateFederation(t, func(fed *meshv1.MeshFederation) { fed.Spec.Members = fed.Spec.Members[:3] })
		f.waitReady(t)
	})

	t.Run("a stopped member API server is reported within 10s, the others keep syncing, and it converges on return", func(t *testing.T) {
		// The lost member's endpoints must be seen withdrawn, so it needs a workload pod.
		testbed.RequireWorkloads(t, f.tb)
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Spec.Selector = map[string]string{"app": "before-outage"}
		exportService(t, b, "shop", "before-outage", svc)
		waitImport(t, f.members, "shop", "before-outage", func(*mcsv1beta1.ServiceImport) error { return nil })
		w, err := b.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "before-outage-0",
			Labels: map[string]string{"app": "before-outage"}, Ports: []corev1.ContainerPort{{ContainerPort: 8080}}})
		if err != nil {
			t.Fatal(err)
		}
		waitRemoteEndpoint(t, a, "shop", "before-outage", b.Name, "net-2", w.IP, true)

		stopped := time.Now()
		b.StopAPIServer()
		testbed.Eventually(t, 10*time.Second, "member reported disconnected", func() error {
			for _, ms := range f.get(t).Status.Members {
				if ms.Name == b.Name && !ms.Connected {
					return nil
				}
			}
			return fmt.Errorf("still connected")
		})
		t.Logf("disconnection reported %s after the API server stopped", time.Since(stopped).Round(10*time.Millisecond))
		// Within the 5s grace period the endpoints stay; after it they are withdrawn.
		if time.Since(stopped) < 4*time.Second {
			waitRemoteEndpoint(t, a, "shop", "before-outage", b.Name, "net-2", w.IP, true)
		}
		testbed.Eventually(t, 20*time.Second, "endpoints of the lost member withdrawn after the grace period", func() error {
			var slices discoveryv1.EndpointSliceList
			if err := a.Client.List(ctx, &slices, client.MatchingLabels{mcsv1beta1.LabelSourceCluster: b.Name}); err != nil {
				return err
			}
			if len(slices.Items) > 0 {
				return fmt.Errorf("%d slices from %s left", len(slices.Items), b.Name)
			}
			return nil
		})
		t.Logf("endpoints withdrawn %s after the API server stopped", time.Since(stopped).Round(10*time.Millisecond))

		exportService(t, c, "shop", "during-outage", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, []*testbed.Cluster{a, c}, "shop", "during-outage", func(*mcsv1beta1.ServiceImport) error { return nil })
		// b's exports stay imported elsewhere (grace period, then endpoints withdrawn).
		waitImport(t, []*testbed.Cluster{a, c}, "shop", "before-outage", func(*mcsv1beta1.ServiceImport) error { return nil })

		if err := b.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitReady(t)
		waitImport(t, f.members, "shop", "during-outage", func(*mcsv1beta1.ServiceImport) error { return nil })
		waitRemoteEndpoint(t, a, "shop", "before-outage", b.Name, "net-2", w.IP, true)
	})

	t.Run("deleting an exported Service or its namespace removes the import everywhere", func(t *testing.T) {
		exportService(t, a, "shop", "doomed", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "shop", "doomed", func(*mcsv1beta1.ServiceImport) error { return nil })
		if err := a.Client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "doomed"}}); err != nil {
			t.Fatal(err)
		}
		waitExportCondition(t, a, "shop", "doomed", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoService)
		waitNoImport(t, f.members, "shop", "doomed")

		for _, m := range f.members {
			testbed.MustCreate(ctx, t, m.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "temp"}})
		}
		exportService(t, c, "temp", "short-lived", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, f.members, "temp", "short-lived", func(*mcsv1beta1.ServiceImport) error { return nil })
		if err := c.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "temp"}}); err != nil {
			t.Fatal(err)
		}
		waitNoImport(t, []*testbed.Cluster{a, b}, "temp", "short-lived")
	})

	t.Run("a hub restart neither deletes nor recreates imports, and changes made meanwhile converge", func(t *testing.T) {
		before := importUIDs(t, b)
		if len(before) == 0 {
			t.Fatal("no imports to watch")
		}
		wc, err := client.NewWithWatch(b.Config, client.Options{Scheme: testbed.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		w, err := wc.Watch(watchCtx, &mcsv1beta1.ServiceImportList{}, client.InNamespace(""))
		if err != nil {
			t.Fatal(err)
		}
		deletions := make(chan string, 100)
		go func() {
			for ev := range w.ResultChan() {
				if ev.Type == "DELETED" {
					if o, ok := ev.Object.(client.Object); ok {
						deletions <- o.GetNamespace() + "/" + o.GetName()
					}
				}
			}
		}()

		if err := f.hub.StopOperator(ctx); err != nil {
			t.Fatalf("hub did not stop cleanly: %v", err)
		}
		exportService(t, c, "shop", "while-hub-down", testbed.ClusterIPService(testbed.HTTPPort(80)))
		if err := f.hub.StartOperator(ctx); err != nil {
			t.Fatal(err)
		}
		waitImport(t, f.members, "shop", "while-hub-down", func(*mcsv1beta1.ServiceImport) error { return nil })
		f.waitReady(t)
		w.Stop()
		close(deletions)
		for d := range deletions {
			t.Errorf("ServiceImport %s was deleted during the hub restart", d)
		}
		after := importUIDs(t, b)
		for key, uid := range before {
			if after[key] != uid {
				t.Errorf("ServiceImport %s changed UID across the hub restart: %s -> %s", key, uid, after[key])
			}
		}
	})

	t.Run("a member unreachable across a hub restart is disconnected, not gone: its imports stay, its endpoints go after the grace period", func(t *testing.T) {
		testbed.RequireWorkloads(t, f.tb)
		fromB := func(m *testbed.Cluster) int {
			var slices discoveryv1.EndpointSliceList
			if err := m.Client.List(ctx, &slices, client.MatchingLabels{mcsv1beta1.LabelSourceCluster: b.Name}); err != nil {
				t.Fatal(err)
			}
			return len(slices.Items)
		}
		// before-outage is exported by b alone, with a ready endpoint (see above).
		testbed.Eventually(t, 30*time.Second, "b's endpoints mirrored in "+a.Name, func() error {
			if n := fromB(a); n == 0 {
				return fmt.Errorf("none")
			}
			return nil
		})
		if err := f.hub.StopOperator(ctx); err != nil {
			t.Fatal(err)
		}
		b.StopAPIServer()
		if err := f.hub.StartOperator(ctx); err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 30*time.Second, "b's endpoints withdrawn in "+a.Name+" after the grace period", func() error {
			if n := fromB(a); n > 0 {
				return fmt.Errorf("%d slices from %s left", n, b.Name)
			}
			return nil
		})
		for _, m := range []*testbed.Cluster{a, c} {
			var si mcsv1beta1.ServiceImport
			if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "before-outage"}, &si); err != nil {
				t.Errorf("%s: the import of the unknown member's service: %v", m.Name, err)
			} else if !strings.Contains(clusters(&si), b.Name) {
				t.Errorf("%s: the import no longer lists %s: %s", m.Name, b.Name, clusters(&si))
			}
			var peer meshv1.MeshPeer
			if err := m.Client.Get(ctx, client.ObjectKey{Name: b.Name}, &peer); err != nil {
				t.Errorf("%s: MeshPeer %s: %v", m.Name, b.Name, err)
			} else if peer.Spec.Network != "net-2" || meta.IsStatusConditionTrue(peer.Status.Conditions, meshv1.ConditionConnected) {
				t.Errorf("%s: MeshPeer %s lost what was known of it or says it is connected: %+v", m.Name, b.Name, peer)
			}
		}
		if err := b.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitReady(t)
		testbed.Eventually(t, 30*time.Second, "b's endpoints back in "+a.Name, func() error {
			if n := fromB(a); n == 0 {
				return fmt.Errorf("none")
			}
			return nil
		})
	})

	t.Run("a member removed while unreachable is cleaned once it answers, even after a hub restart", func(t *testing.T) {
		// The removed member's endpoints must be seen mirrored first, then gone: a pod.
		testbed.RequireWorkloads(t, f.tb)
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Spec.Selector = map[string]string{"app": "from-c"}
		exportService(t, c, "shop", "from-c", svc)
		waitImport(t, f.members, "shop", "from-c", func(*mcsv1beta1.ServiceImport) error { return nil })
		w, err := c.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "from-c-0",
			Labels: map[string]string{"app": "from-c"}, Ports: []corev1.ContainerPort{{ContainerPort: 8080}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []*testbed.Cluster{a, b} {
			waitRemoteEndpoint(t, m, "shop", "from-c", c.Name, "net-3", w.IP, true)
		}
		c.StopAPIServer()
		f.updateFederation(t, func(fed *meshv1.MeshFederation) { fed.Spec.Members = fed.Spec.Members[:2] })
		testbed.Eventually(t, 30*time.Second, "the leaving member listed with why it is not cleaned, and an Event", func() error {
			fed := f.get(t)
			if len(fed.Status.LeavingMembers) != 1 || fed.Status.LeavingMembers[0].Name != c.Name ||
				!strings.Contains(fed.Status.LeavingMembers[0].Message, "not reachable") {
				return fmt.Errorf("leaving members %+v", fed.Status.LeavingMembers)
			}
			var events corev1.EventList
			if err := f.hub.Client.List(ctx, &events, client.InNamespace(hubNS)); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.Reason == meshv1.EventMemberCleanupPending && strings.Contains(e.Message, c.Name) {
					return nil
				}
			}
			return fmt.Errorf("no %s Event", meshv1.EventMemberCleanupPending)
		})
		// What the hub must still clean survives its restart (its connections do not).
		if err := f.hub.StopOperator(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.hub.StartOperator(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		// After a minute without its API server, the member operator's informers retry
		// with client-go's reflector back-off (up to 30 s, jittered up to twice that)
		// before they see the hub take its intermediate back and drop meshfed-cacerts.
		waitNothingWritten(t, c, 90*time.Second)
		testbed.Eventually(t, 30*time.Second, "no leaving member left", func() error {
			if left := f.get(t).Status.LeavingMembers; len(left) > 0 {
				return fmt.Errorf("%+v", left)
			}
			return nil
		})
		waitNoImport(t, []*testbed.Cluster{a, b}, "shop", "from-c")
		for _, m := range []*testbed.Cluster{a, b} {
			testbed.Eventually(t, 30*time.Second, "no MeshPeer or endpoints of the removed member in "+m.Name, func() error {
				var slices discoveryv1.EndpointSliceList
				if err := m.Client.List(ctx, &slices, client.MatchingLabels{mcsv1beta1.LabelSourceCluster: c.Name}); err != nil {
					return err
				}
				err := m.Client.Get(ctx, client.ObjectKey{Name: c.Name}, &meshv1.MeshPeer{})
				if len(slices.Items) > 0 || !apierrors.IsNotFound(err) {
					return fmt.Errorf("%d slices from %s, MeshPeer lookup: %w", len(slices.Items), c.Name, err)
				}
				return nil
			})
		}
		f.waitReady(t)
	})

	t.Run("deleting the MeshFederation, even while the hub is down, leaves nothing meshfed wrote in any member", func(t *testing.T) {
		if err := f.hub.StopOperator(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.hub.Client.Delete(ctx, f.get(t)); err != nil {
			t.Fatal(err)
		}
		if err := f.hub.StartOperator(ctx); err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 30*time.Second, "MeshFederation gone", func() error {
			err := f.hub.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: "global"}, &meshv1.MeshFederation{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%w)", err)
		})
		for _, m := range f.members {
			waitNothingWritten(t, m, 30*time.Second)
		}
		testbed.Eventually(t, 30*time.Second, "no certificate or CA key of the federation left in the hub", func() error {
			var certs cmapi.CertificateList
			var secrets corev1.SecretList
			if err := f.hub.Client.List(ctx, &certs, client.InNamespace(hubNS)); err != nil {
				return err
			}
			if err := f.hub.Client.List(ctx, &secrets, client.InNamespace(hubNS)); err != nil {
				return err
			}
			// The operator's own webhook certificate (config/default) is not the federation's.
			install := map[string]bool{"meshfed-webhook": true, "meshfed-webhook-cert": true}
			var left []string
			for _, c := range certs.Items {
				if !install[c.Name] {
					left = append(left, "Certificate "+c.Name)
				}
			}
			for _, s := range secrets.Items {
				if s.Type == corev1.SecretTypeTLS && !install[s.Name] {
					left = append(left, "Secret "+s.Name)
				}
			}
			if len(left) > 0 {
				return fmt.Errorf("left: %v", left)
			}
			return nil
		})
	})
}

// waitNothingWritten waits, up to within, until a cluster holds no object meshfed's hub
// wrote.
func waitNothingWritten(t *testing.T, m *testbed.Cluster, within time.Duration) {
	t.Helper()
	testbed.Eventually(t, within, "nothing meshfed wrote left in "+m.Name, func() error {
		// What the hub writes carries its federation label (the member's own objects, such as
		// its gateway, do not).
		sel := client.HasLabels{meshv1.LabelFederation}
		var imports mcsv1beta1.ServiceImportList
		var slices discoveryv1.EndpointSliceList
		var peers meshv1.MeshPeerList
		for _, list := range []client.ObjectList{&imports, &slices, &peers} {
			if err := m.Client.List(context.Background(), list, sel); err != nil {
				return err
			}
		}
		if n := len(imports.Items) + len(slices.Items) + len(peers.Items); n > 0 {
			return fmt.Errorf("%d imports, %d slices, %d peers left", len(imports.Items), len(slices.Items), len(peers.Items))
		}
		var cacerts corev1.Secret
		if err := m.Client.Get(context.Background(), client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &cacerts); err == nil {
			return errors.New("meshfed-cacerts still there")
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
}

func importUIDs(t *testing.T, m *testbed.Cluster) map[string]string {
	t.Helper()
	var list mcsv1beta1.ServiceImportList
	if err := m.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	for _, si := range list.Items {
		uids[si.Namespace+"/"+si.Name] = string(si.UID)
	}
	return uids
}

func waitRemoteEndpoint(t *testing.T, m *testbed.Cluster, ns, svc, source, network, ip string, ready bool) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, fmt.Sprintf("%s: endpoint %s of %s/%s from %s ready=%v", m.Name, ip, ns, svc, source, ready), func() error {
		var slices discoveryv1.EndpointSliceList
		if err := m.Client.List(context.Background(), &slices, client.InNamespace(ns), client.MatchingLabels{
			mcsv1beta1.LabelServiceName: svc, mcsv1beta1.LabelSourceCluster: source,
			discoveryv1.LabelManagedBy: meshv1.EndpointSliceManager, meshv1.LabelSourceNetwork: network,
		}); err != nil {
			return err
		}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Addresses[0] == ip && ptr.Deref(ep.Conditions.Ready, false) == ready {
					return nil
				}
			}
		}
		return fmt.Errorf("not found in %d slices", len(slices.Items))
	})
}
