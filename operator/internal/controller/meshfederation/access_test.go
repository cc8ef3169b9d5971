package meshfederation_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/trust"
	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

// kubeconfigOf reads the kubeconfig the hub holds for member.
func kubeconfigOf(t *testing.T, hub *testbed.Cluster, member string) []byte {
	t.Helper()
	var s corev1.Secret
	must(t, hub.Client.Get(context.Background(), client.ObjectKey{Namespace: hubNS, Name: join.SecretName(member)}, &s))
	return s.Data["kubeconfig"]
}

// clientFor connects with a kubeconfig, as the hub would.
func clientFor(t *testing.T, kubeconfig []byte) client.Client {
	t.Helper()
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	must(t, err)
	c, err := client.New(cfg, client.Options{Scheme: testbed.Scheme})
	must(t, err)
	return c
}

func tokenClaims(t *testing.T, kubeconfig []byte) (string, join.TokenClaims) {
	t.Helper()
	token, err := join.TokenOf(kubeconfig)
	must(t, err)
	claims, ok := join.ParseServiceAccountToken(token)
	if !ok {
		t.Fatalf("the hub's kubeconfig holds no service-account token")
	}
	return token, claims
}

// TestUnjoinRevokesAccess: the credentials join gives the hub expire, the hub renews them
// before they do without losing the member, and unjoin takes them away for good along
// with everything the hub wrote in the member; the other member is left as it was.
func TestUnjoinRevokesAccess(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 2, Operator: true})
	hub, a, b := tb.Clusters[0], tb.Clusters[0], tb.Clusters[1]
	ctx := context.Background()
	testbed.MustCreate(ctx, t, hub.Client, testbed.Namespace(hubNS))
	fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "global"},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned}}}
	for i, c := range tb.Clusters {
		_, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: hub.Client, HubNamespace: hubNS})
		must(t, err)
		testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
			Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: fmt.Sprintf("net-%d", i+1)}})
		fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}})
	}
	testbed.MustCreate(ctx, t, hub.Client, fed)
	for _, c := range tb.Clusters {
		testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))
	}
	waitTrust(t, hub, "global", tb.Clusters)

	t.Run("the token join gives the hub expires within a day", func(t *testing.T) {
		_, claims := tokenClaims(t, kubeconfigOf(t, hub, a.Name))
		if left := time.Until(claims.Expiry); left < 23*time.Hour || left > join.DefaultTokenTTL+time.Minute {
			t.Errorf("the hub's token ends in %s, want about %s", left, join.DefaultTokenTTL)
		}
		var legacy corev1.SecretList
		must(t, a.Client.List(ctx, &legacy, client.InNamespace(join.MemberNamespace), client.MatchingFields{"type": string(corev1.SecretTypeServiceAccountToken)}))
		if len(legacy.Items) > 0 {
			t.Errorf("the member holds %d non-expiring token Secrets, e.g. %s", len(legacy.Items), legacy.Items[0].Name)
		}
	})

	t.Run("the hub renews its token before it ends, keeping the member", func(t *testing.T) {
		short, err := join.RequestToken(ctx, b.Client, join.MemberNamespace, join.ServiceAccount, 10*time.Minute)
		must(t, err)
		kubeconfig, err := join.ReplaceToken(kubeconfigOf(t, hub, b.Name), short)
		must(t, err)
		var secret corev1.Secret
		must(t, hub.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: join.SecretName(b.Name)}, &secret))
		secret.Data["kubeconfig"] = kubeconfig
		must(t, hub.Client.Update(ctx, &secret))
		testbed.Eventually(t, 30*time.Second, "the hub replaces a token with 10 minutes left", func() error {
			token, claims := tokenClaims(t, kubeconfigOf(t, hub, b.Name))
			if token == short || time.Until(claims.Expiry) < 23*time.Hour {
				return fmt.Errorf("the token ends at %s", claims.Expiry)
			}
			return nil
		})
		// The member is served with the new token: an export of b reaches a.
		exportService(t, b, "shop", "after-renewal", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, []*testbed.Cluster{a, b}, "shop", "after-renewal", func(si *mcsv1beta1.ServiceImport) error {
			return expect(clusters(si), b.Name)
		})
		var events corev1.EventList
		must(t, hub.Client.List(ctx, &events, client.InNamespace(hubNS)))
		renewed := 0
		for _, e := range events.Items {
			if e.Reason == meshv1.EventTokenRenewed {
				renewed++
			}
		}
		if renewed == 0 {
			t.Errorf("no %s Event on the MeshFederation", meshv1.EventTokenRenewed)
		}
	})

	t.Run("unjoin takes the hub's access away and removes what it wrote", func(t *testing.T) {
		testbed.RequireWorkloads(t, tb)
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Spec.Selector = map[string]string{"app": "ratings"}
		exportService(t, b, "shop", "ratings", svc)
		w, err := b.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "ratings-0",
			Labels: map[string]string{"app": "ratings"}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}})
		must(t, err)
		waitRemoteEndpoint(t, a, "shop", "ratings", b.Name, "net-2", w.IP, true)
		exportService(t, a, "shop", "local", testbed.ClusterIPService(testbed.HTTPPort(80)))
		waitImport(t, []*testbed.Cluster{a, b}, "shop", "local", func(si *mcsv1beta1.ServiceImport) error {
			return expect(clusters(si), a.Name)
		})
		kubeconfig := kubeconfigOf(t, hub, a.Name)
		stolen := clientFor(t, kubeconfig)
		must(t, stolen.List(ctx, &mcsv1beta1.ServiceImportList{}))

		res, err := join.Unjoin(ctx, join.UnjoinOptions{Name: a.Name, Member: a.Client, Hub: hub.Client, HubNamespace: hubNS})
		must(t, err)
		if len(res.StillListedBy) != 1 || res.StillListedBy[0] != "global" {
			t.Errorf("unjoin says %v still list the member, want [global]", res.StillListedBy)
		}
		if res.Removed["ServiceImport"] == 0 || res.Removed["EndpointSlice"] == 0 || res.Removed["MeshPeer"] == 0 || res.Removed["ConfigMap"] != 1 {
			t.Errorf("unjoin removed %v, want ServiceImports, EndpointSlices, a MeshPeer and the intermediate's ConfigMap", res.Removed)
		}

		// Every token issued for the hub's ServiceAccount stops working.
		testbed.Eventually(t, 10*time.Second, "the hub's token refused", func() error {
			if err := stolen.List(ctx, &mcsv1beta1.ServiceImportList{}); !apierrors.IsUnauthorized(err) {
				return fmt.Errorf("list with the hub's token: %w, want Unauthorized", err)
			}
			return nil
		})
		if err := hub.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: join.SecretName(a.Name)}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("the hub's kubeconfig Secret for %s: %v, want it deleted", a.Name, err)
		}
		for _, obj := range []client.Object{
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: join.MemberNamespace, Name: join.ServiceAccount}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: join.ClusterRoleName}},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: join.ClusterRoleName}},
			&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: join.MemberNamespace, Name: join.ClusterRoleName}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: join.MemberNamespace, Name: trust.IntermediateConfigMap}},
			&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: join.PolicyName}},
		} {
			if err := a.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); !apierrors.IsNotFound(err) {
				t.Errorf("%T %s is still in the member (%v)", obj, obj.GetName(), err)
			}
		}
		// Nothing the hub wrote is left, and the hub, which still lists the member, writes
		// nothing anew: it reports the member unreachable instead.
		testbed.Eventually(t, 30*time.Second, "the hub reports "+a.Name+" unreachable", func() error {
			var got meshv1.MeshFederation
			must(t, hub.Client.Get(ctx, client.ObjectKeyFromObject(fed), &got))
			for _, m := range got.Status.Members {
				if m.Name == a.Name && !m.Connected && m.Message != "" {
					return nil
				}
			}
			return fmt.Errorf("members %+v", got.Status.Members)
		})
		written := client.HasLabels{meshv1.LabelFederation}
		for _, list := range []client.ObjectList{&mcsv1beta1.ServiceImportList{}, &discoveryv1.EndpointSliceList{}, &meshv1.MeshPeerList{}} {
			must(t, a.Client.List(ctx, list, written))
			if n := meta.LenList(list); n > 0 {
				t.Errorf("%d %T written by the hub are left in the member", n, list)
			}
		}
		// What the member holds of its own stays: its exports and its CA key.
		must(t, a.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "local"}, &mcsv1beta1.ServiceExport{}))
		must(t, a.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.KeySecret}, &corev1.Secret{}))
		// The other member is untouched: it still imports its own export.
		waitImport(t, []*testbed.Cluster{b}, "shop", "ratings", func(si *mcsv1beta1.ServiceImport) error {
			return expect(clusters(si), b.Name)
		})
	})
}

// TestAClusterJoinedUnderAnotherNameIsRefused: each member states its cluster ID and its
// ClusterSet in About API ClusterProperties (KEP-2149); a kubeconfig that reaches a cluster
// under another member name (a mistake, or one cluster posing as another) is refused by the
// hub, and the rightful member keeps working.
func TestAClusterJoinedUnderAnotherNameIsRefused(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	c := tb.Clusters[0]
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace(hubNS))
	for _, name := range []string{c.Name, "impostor"} {
		_, err := join.Join(ctx, join.Options{Name: name, Member: c.Client, MemberConfig: c.Config, Hub: c.Client, HubNamespace: hubNS})
		must(t, err)
	}
	testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: "net-1"}})
	fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "global"},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned}, Members: []meshv1.Member{
			{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}},
		}}}
	testbed.MustCreate(ctx, t, c.Client, fed)
	waitTrust(t, c, "global", []*testbed.Cluster{c})

	for name, want := range map[string]string{aboutv1alpha1.PropertyClusterID: c.Name, aboutv1alpha1.PropertyClusterSet: hubNS + ".global"} {
		testbed.Eventually(t, 30*time.Second, "ClusterProperty "+name, func() error {
			var p aboutv1alpha1.ClusterProperty
			if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
				return err
			}
			return expect(p.Spec.Value, want)
		})
	}

	must(t, c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed))
	before := fed.DeepCopy()
	fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: "impostor", KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName("impostor")}})
	must(t, c.Client.Patch(ctx, fed, client.MergeFrom(before)))
	testbed.Eventually(t, 30*time.Second, "the hub refuses member impostor", func() error {
		must(t, c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed))
		for _, m := range fed.Status.Members {
			if m.Name == "impostor" {
				if !strings.Contains(m.Message, "refused") || !strings.Contains(m.Message, c.Name) {
					return fmt.Errorf("impostor's status: %q", m.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("no status for impostor in %+v", fed.Status.Members)
	})
	// The rightful member still imports what it exports.
	exportService(t, c, "shop", "cart", testbed.ClusterIPService(testbed.HTTPPort(80)))
	waitImport(t, []*testbed.Cluster{c}, "shop", "cart", func(si *mcsv1beta1.ServiceImport) error {
		return expect(clusters(si), c.Name)
	})
}
