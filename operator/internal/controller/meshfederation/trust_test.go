package meshfederation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
)

const trustDomain = "cluster.local"

// waitTrust waits until the federation reports every member holding the current bundle
// and every member's Mesh reports its CA Issuer ready.
func waitTrust(t *testing.T, hub *testbed.Cluster, name string, members []*testbed.Cluster) *meshv1.MeshFederation {
	t.Helper()
	ctx := context.Background()
	var fed meshv1.MeshFederation
	testbed.Eventually(t, 90*time.Second, "TrustReady on the federation and every member's bundle", func() error {
		if err := hub.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: name}, &fed); err != nil {
			return err
		}
		c := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionTrustReady)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("TrustReady %+v", c)
		}
		for _, m := range fed.Status.Members {
			if m.TrustBundleVersion != fed.Status.Trust.BundleVersion {
				return fmt.Errorf("member %s holds bundle %q, want %q", m.Name, m.TrustBundleVersion, fed.Status.Trust.BundleVersion)
			}
		}
		return nil
	})
	for _, m := range members {
		testbed.Eventually(t, 60*time.Second, m.Name+": Mesh TrustReady", func() error {
			var mesh meshv1.Mesh
			if err := m.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionTrustReady); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("TrustReady %+v", c)
			}
			return nil
		})
	}
	return &fed
}

func issue(t *testing.T, c *testbed.Cluster, ns, sa string) *testbed.Identity {
	t.Helper()
	return issueIn(t, c, join.MemberNamespace, ns, sa)
}

// issueIn issues a workload identity from the member's CA Issuer in meshNamespace.
func issueIn(t *testing.T, c *testbed.Cluster, meshNamespace, ns, sa string) *testbed.Identity {
	t.Helper()
	id, err := testbed.IssueWorkload(context.Background(), c.Client, meshNamespace, trustDomain, ns, sa, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// handshake runs one mTLS exchange between a client identity and a server identity and
// returns the identity each side saw.
func handshake(t *testing.T, client, server *testbed.Identity) (seenByServer, seenByClient string, err error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.TLSConfig(true, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- ""
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- ""
			return
		}
		peer := tc.ConnectionState().PeerCertificates[0].URIs[0].String()
		_, _ = io.WriteString(tc, "ok")
		done <- peer
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), client.TLSConfig(false, nil))
	if err != nil {
		<-done
		return "", "", err
	}
	defer conn.Close()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		<-done
		return "", "", fmt.Errorf("read: %w", err)
	}
	return <-done, conn.ConnectionState().PeerCertificates[0].URIs[0].String(), nil
}

// TestTrustBootstrap: a root bootstrapped through the hub's cert-manager, an intermediate
// per member, workload certificates issued by each member's cert-manager that verify
// across clusters and carry the SPIFFE identity, and mTLS across clusters; a certificate
// from an unrelated CA is refused.
func TestTrustBootstrap(t *testing.T) {
	f := startFederation(t, 30*time.Second)
	fed := waitTrust(t, f.hub, "global", f.members)
	ctx := context.Background()
	if fed.Status.Trust.RootFingerprint == "" || fed.Status.Trust.RootNotAfter == nil || len(fed.Status.Trust.TrustedRoots) != 1 {
		t.Fatalf("trust status %+v: want the root's fingerprint, expiry and one trusted root", fed.Status.Trust)
	}

	a, b, c := f.members[0], f.members[1], f.members[2]
	idA := issue(t, a, "shop", "reviews")
	idC := issue(t, c, "shop", "ratings")
	if idA.ID != "spiffe://cluster.local/ns/shop/sa/reviews" || idC.ID != "spiffe://cluster.local/ns/shop/sa/ratings" {
		t.Fatalf("identities %q, %q", idA.ID, idC.ID)
	}
	if len(idA.Leaf.DNSNames) != 0 || len(idA.Leaf.URIs) != 1 {
		t.Errorf("SANs: DNS %v URIs %v, want only the SPIFFE URI", idA.Leaf.DNSNames, idA.Leaf.URIs)
	}

	// A's workload certificate verifies against the bundles B and C hold.
	inter := x509.NewCertPool()
	for _, der := range idA.Certificate.Certificate[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(cert)
	}
	for _, other := range []*testbed.Cluster{b, c} {
		var ca corev1.Secret
		if err := other.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &ca); err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca.Data[trust.KeyBundle])
		if _, err := idA.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("A's workload certificate does not verify against %s's bundle: %v", other.Name, err)
		}
		for _, k := range []string{trust.KeyCert, trust.KeyKey, trust.KeyRoot, trust.KeyChain, trust.KeyBundle} {
			if len(ca.Data[k]) == 0 {
				t.Errorf("%s: meshfed-cacerts lacks %s", other.Name, k)
			}
		}
	}

	// mTLS between a process with A's identity and a server with C's.
	seenByServer, seenByClient, err := handshake(t, idA, idC)
	if err != nil {
		t.Fatalf("mTLS A → C: %v", err)
	}
	if seenByServer != idA.ID || seenByClient != idC.ID {
		t.Errorf("identities seen: server saw %q, client saw %q", seenByServer, seenByClient)
	}

	// A certificate from an unrelated CA (cert-manager, self-signed) is refused.
	unrelated := unrelatedIdentity(t, a, idA.Roots)
	if _, _, err := handshake(t, unrelated, idC); err == nil {
		t.Fatal("a client with an unrelated CA's certificate completed the handshake")
	} else {
		t.Logf("unrelated client refused: %v", err)
	}

	// A malformed intermediate of one member: reported for that member, which keeps its
	// CA; the other members are not disturbed (their CA and TrustReady stay).
	t.Run("a malformed intermediate of one member leaves the others alone", func(t *testing.T) {
		before := map[string][]byte{}
		for _, m := range f.members {
			var s corev1.Secret
			must(t, m.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &s))
			before[m.Name] = s.Data[trust.KeyCert]
		}
		broken := breakIntermediate(t, f.hub, "global", b.Name)
		testbed.Eventually(t, time.Minute, "an InvalidCertificate Event naming the CertificateRequest", func() error {
			var events corev1.EventList
			if err := f.hub.Client.List(ctx, &events, client.InNamespace(hubNS)); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.Reason == "InvalidCertificate" && strings.Contains(e.Message, "CertificateRequest meshfed-system/"+broken) && strings.Contains(e.Message, b.Name) {
					return nil
				}
			}
			return errors.New("none yet")
		})
		for _, m := range f.members {
			var s corev1.Secret
			must(t, m.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &s))
			if _, err := trust.ParseCertificates(s.Data[trust.KeyCert]); err != nil || len(s.Data[trust.KeyKey]) == 0 {
				t.Errorf("%s lost its intermediate CA (%v)", m.Name, err)
			}
			if m.Name != b.Name && !bytes.Equal(s.Data[trust.KeyCert], before[m.Name]) {
				t.Errorf("%s's intermediate changed because of %s's broken certificate", m.Name, b.Name)
			}
			mesh := &meshv1.Mesh{}
			must(t, m.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, mesh))
			if c := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionTrustReady); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("%s: TrustReady %+v", m.Name, c)
			}
		}
		// A handshake between the undisturbed members still works.
		if _, _, err := handshake(t, idA, idC); err != nil {
			t.Errorf("mTLS A → C after B's broken certificate: %v", err)
		}
		// The hub has B's intermediate signed again; trust recovers.
		waitTrust(t, f.hub, "global", f.members)
	})

	// The root's key replaced behind the hub's back (its Secret deleted, so cert-manager
	// issues a new root; cert-manager has also been seen to issue a fresh root twice under
	// load): every member's intermediate is signed again under the root the issuer now
	// signs with, and the federation ends up trusting that one root.
	t.Run("a root issued again is followed by every intermediate", func(t *testing.T) {
		old := f.get(t).Status.Trust.RootFingerprint
		must(t, f.hub.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: trust.RootName("global", 0)}}))
		testbed.Eventually(t, 2*time.Minute, "one trusted root, not the deleted one", func() error {
			tr := f.get(t).Status.Trust
			if tr.RootFingerprint == old || len(tr.TrustedRoots) != 1 || tr.TrustedRoots[0] != tr.RootFingerprint {
				return fmt.Errorf("root %.16s, trusted %v", tr.RootFingerprint, tr.TrustedRoots)
			}
			return nil
		})
		waitTrust(t, f.hub, "global", f.members)
		if _, _, err := handshake(t, issue(t, a, "shop", "reviews"), issue(t, c, "shop", "ratings")); err != nil {
			t.Errorf("mTLS A → C under the new root: %v", err)
		}
	})

	// The Events and statuses carry no key material (nor any PEM: fingerprints only).
	for _, c := range f.members {
		var events corev1.EventList
		if err := c.Client.List(ctx, &events); err != nil {
			t.Fatal(err)
		}
		for _, e := range events.Items {
			if strings.Contains(e.Message, "PRIVATE KEY") || strings.Contains(e.Message, "-----BEGIN") {
				t.Errorf("%s: Event %s/%s quotes PEM material", c.Name, e.Namespace, e.Name)
			}
		}
		var mesh meshv1.Mesh
		must(t, c.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh))
		// The one PEM a status carries is the member's CSR, public by nature.
		if _, err := trust.CheckIntermediateRequest([]byte(mesh.Status.Trust.IntermediateRequest), c.Name, trustDomain); err != nil {
			t.Errorf("%s: the published intermediate request: %v", c.Name, err)
		}
		mesh.Status.Trust.IntermediateRequest = ""
		var peers meshv1.MeshPeerList
		must(t, c.Client.List(ctx, &peers))
		statuses := []any{mesh.Status}
		for _, p := range peers.Items {
			statuses = append(statuses, p.Status)
		}
		for _, st := range statuses {
			raw, err := json.Marshal(st)
			must(t, err)
			if bytes.Contains(raw, []byte("-----BEGIN")) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
				t.Errorf("%s: a status carries PEM material: %s", c.Name, raw)
			}
		}
	}
	raw, err := json.Marshal(f.get(t).Status)
	must(t, err)
	if bytes.Contains(raw, []byte("-----BEGIN")) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Errorf("the MeshFederation status carries PEM material: %s", raw)
	}
}

// unrelatedIdentity issues, through cert-manager in c, a SPIFFE certificate from a
// self-signed issuer outside the federation.
func unrelatedIdentity(t *testing.T, c *testbed.Cluster, roots *x509.CertPool) *testbed.Identity {
	t.Helper()
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "unrelated"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "evil"},
		Spec: cmapi.CertificateSpec{SecretName: "evil", URIs: []string{"spiffe://cluster.local/ns/shop/sa/evil"},
			Usages:    []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: "unrelated", Kind: cmapi.IssuerKind}}})
	var s corev1.Secret
	testbed.Eventually(t, time.Minute, "the unrelated certificate", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "evil"}, &s)
	})
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	return &testbed.Identity{ID: "spiffe://cluster.local/ns/shop/sa/evil", Certificate: pair, Leaf: pair.Leaf, Roots: roots}
}

// TestTrustBringYourOwnIssuer: a federation whose issuerRef names an issuer that does not
// exist reports it (condition and Event) and still federates services; once the user
// creates the issuer, the intermediates chain to the user's root. A malformed intermediate
// Secret is reported without taking the member's CA away. The member's mesh namespace is
// not the default one: the hub writes its intermediate's certificates where join and the member's
// --mesh-namespace say, its one source of truth being the kubeconfig join wrote.
func TestTrustBringYourOwnIssuer(t *testing.T) {
	const meshNS = "mesh-corp"
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true, OperatorArgs: []string{"--mesh-namespace=" + meshNS}})
	c := tb.Clusters[0]
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubNS}})
	if _, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: c.Client, HubNamespace: hubNS, Namespace: meshNS}); err != nil {
		t.Fatal(err)
	}
	testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: "net-1"}})
	fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "corp"}, Spec: meshv1.MeshFederationSpec{
		Trust:   meshv1.TrustSpec{IssuerRef: &meshv1.IssuerRef{Name: "corp-root"}},
		Members: []meshv1.Member{{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}}},
	}}
	testbed.MustCreate(ctx, t, c.Client, fed)

	testbed.Eventually(t, time.Minute, "TrustReady=False/IssuerNotFound naming the issuer, while Ready", func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed); err != nil {
			return err
		}
		tc := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionTrustReady)
		if tc == nil || tc.Reason != "IssuerNotFound" || !strings.Contains(tc.Message, "Issuer meshfed-system/corp-root not found") {
			return fmt.Errorf("TrustReady %+v", tc)
		}
		if !meta.IsStatusConditionTrue(fed.Status.Conditions, meshv1.ConditionReady) {
			return errors.New("the federation is not Ready: a broken issuer must not stop service federation")
		}
		return nil
	})
	testbed.Eventually(t, 30*time.Second, "an IssuerNotFound Event", func() error {
		var events corev1.EventList
		if err := c.Client.List(ctx, &events, client.InNamespace(hubNS)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "corp" && e.Reason == "IssuerNotFound" {
				return nil
			}
		}
		return errors.New("none yet")
	})

	// The user's root: a self-signed CA and a CA Issuer, all cert-manager.
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "corp-selfsigned"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "corp-root"},
		Spec: cmapi.CertificateSpec{IsCA: true, CommonName: "Corp Root CA", SecretName: "corp-root",
			IssuerRef: cmmeta.IssuerReference{Name: "corp-selfsigned", Kind: cmapi.IssuerKind}}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "corp-root"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "corp-root"}}}})

	got := waitTrust(t, c, "corp", []*testbed.Cluster{c})
	var root corev1.Secret
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: "corp-root"}, &root); err != nil {
		t.Fatal(err)
	}
	rootCerts, err := trust.ParseCertificates(root.Data[corev1.TLSCertKey])
	if err != nil || len(rootCerts) == 0 {
		t.Fatalf("corp root: %v", err)
	}
	if got.Status.Trust.RootFingerprint != trust.Fingerprint(rootCerts[0]) {
		t.Errorf("status root %s, want the corp root %s", got.Status.Trust.RootFingerprint, trust.Fingerprint(rootCerts[0]))
	}
	id := issueIn(t, c, meshNS, "shop", "web")
	roots := x509.NewCertPool()
	roots.AddCert(rootCerts[0])
	inter := x509.NewCertPool()
	for _, der := range id.Certificate.Certificate[1:] {
		cert, _ := x509.ParseCertificate(der)
		inter.AddCert(cert)
	}
	if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the workload certificate does not chain to the corp root: %v", err)
	}

	// A malformed intermediate in the hub: reported, and the member keeps its CA.
	interName := breakIntermediate(t, c, "corp", c.Name)
	testbed.Eventually(t, time.Minute, "InvalidCertificate reported", func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed); err != nil {
			return err
		}
		var events corev1.EventList
		if err := c.Client.List(ctx, &events, client.InNamespace(hubNS)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "corp" && e.Reason == "InvalidCertificate" && strings.Contains(e.Message, "CertificateRequest meshfed-system/"+interName) {
				return nil
			}
		}
		return fmt.Errorf("no InvalidCertificate Event; TrustReady %+v", meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionTrustReady))
	})
	var after corev1.Secret
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: meshNS, Name: trust.CACertsSecret}, &after))
	if len(after.Data[trust.KeyKey]) == 0 || len(after.Data[trust.KeyCert]) == 0 {
		t.Error("the member lost its intermediate CA to a malformed certificate in the hub")
	}
	if _, err := trust.ParseCertificates(after.Data[trust.KeyCert]); err != nil {
		t.Errorf("the member got the malformed certificate: %v", err)
	}
	// The hub has the intermediate signed again; trust recovers.
	waitTrust(t, c, "corp", []*testbed.Cluster{c})

	// An intermediate that enters its renewal window while its issuer cannot sign: the
	// hub says so (renewal starts 10 s after issuance here), and the member keeps its CA.
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed); err != nil {
			return err
		}
		fed.Spec.Trust.IntermediateDuration = &metav1.Duration{Duration: time.Hour}
		fed.Spec.Trust.IntermediateRenewBefore = &metav1.Duration{Duration: time.Hour - 10*time.Second}
		return c.Client.Update(ctx, fed)
	}))
	testbed.Eventually(t, time.Minute, "the intermediate re-issued with a one-hour lifetime", func() error {
		var s corev1.Secret
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: meshNS, Name: trust.CACertsSecret}, &s); err != nil {
			return err
		}
		certs, err := trust.ParseCertificates(s.Data[trust.KeyCert])
		if err != nil || len(certs) == 0 || certs[0].NotAfter.Sub(certs[0].NotBefore) > 2*time.Hour {
			return fmt.Errorf("not yet (%w)", err)
		}
		return nil
	})
	must(t, c.Client.Delete(ctx, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "corp-root"}}))
	testbed.Eventually(t, time.Minute, "TrustReady=False saying the intermediate is not renewed", func() error {
		must(t, c.Client.Get(ctx, client.ObjectKeyFromObject(fed), fed))
		tc := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionTrustReady)
		if tc == nil || tc.Status != metav1.ConditionFalse || !strings.Contains(tc.Message, "the root issuer has not signed its renewal") {
			return fmt.Errorf("TrustReady %+v", tc)
		}
		t.Logf("expiring intermediate reported: %s", tc.Message)
		return nil
	})
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: meshNS, Name: trust.CACertsSecret}, &after))
	if len(after.Data[trust.KeyKey]) == 0 {
		t.Error("the member lost its intermediate CA")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// breakIntermediate overwrites the certificate cert-manager signed for member's current
// intermediate with garbage, as a confused admin or a faulty issuer might, and returns the
// CertificateRequest's name.
func breakIntermediate(t *testing.T, hub *testbed.Cluster, fed, member string) string {
	t.Helper()
	ctx := context.Background()
	var crs cmapi.CertificateRequestList
	must(t, hub.Client.List(ctx, &crs, client.InNamespace(hubNS), client.MatchingLabels{meshv1.LabelMember: member}))
	var current *cmapi.CertificateRequest
	for i := range crs.Items {
		cr := &crs.Items[i]
		if strings.HasPrefix(cr.Name, trust.IntermediateName(fed, member, 0)+"-") && len(cr.Status.Certificate) > 0 &&
			(current == nil || cr.CreationTimestamp.After(current.CreationTimestamp.Time)) {
			current = cr
		}
	}
	if current == nil {
		t.Fatalf("no signed intermediate request for %s", member)
	}
	current.Status.Certificate = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
	must(t, hub.Client.Status().Update(ctx, current))
	return current.Name
}

func endpointSlice(ns, name string, labels map[string]string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}}}
}

// TestHubCannotReadMemberSecrets: the hub's credentials in a member (what `meshfedctl join`
// gave it) must not reach any Secret there. Before, its Role let it delete meshfed-cacerts
// and create a Secret of that name as a service-account token Secret for the member's
// operator, then read the token; and the hub held every member's intermediate CA key.
// Now each member makes its key and the hub only ever sees CSRs and certificates. Nor do
// they reach a token but the hub's own short-lived one, or an object meshfed did not write
// (the member's ValidatingAdmissionPolicy holds what RBAC cannot).
func TestHubCannotReadMemberSecrets(t *testing.T) {
	// One cluster is hub and member; the member's mesh namespace is not the hub's.
	const ns = "mesh-own"
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true, OperatorArgs: []string{"--mesh-namespace=" + ns}})
	c := tb.Clusters[0]
	ctx := context.Background()
	if _, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: c.Client, HubNamespace: hubNS, Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
		Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: "net-1"}})
	testbed.MustCreate(ctx, t, c.Client, &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "global"}, Spec: meshv1.MeshFederationSpec{
		Trust:   meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned},
		Members: []meshv1.Member{{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}}},
	}})
	waitTrust(t, c, "global", []*testbed.Cluster{c})

	var kubeconfig corev1.Secret
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: hubNS, Name: join.SecretName(c.Name)}, &kubeconfig))
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig.Data["kubeconfig"])
	must(t, err)
	hub, err := client.New(cfg, client.Options{Scheme: testbed.Scheme})
	must(t, err)
	attacks := []struct {
		name string
		do   func() error
	}{
		{"read meshfed-cacerts", func() error {
			return hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: trust.CACertsSecret}, &corev1.Secret{})
		}},
		{"read the member's CA key", func() error {
			return hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: trust.KeySecret}, &corev1.Secret{})
		}},
		{"list the mesh namespace's Secrets", func() error { return hub.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)) }},
		{"list every Secret", func() error { return hub.List(ctx, &corev1.SecretList{}) }},
		{"delete meshfed-cacerts", func() error {
			return hub.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: trust.CACertsSecret}})
		}},
		{"create a token Secret for the member's operator", func() error {
			return hub.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stolen",
				Annotations: map[string]string{corev1.ServiceAccountNameKey: "meshfed-operator"}}, Type: corev1.SecretTypeServiceAccountToken})
		}},
		{"request a token of another ServiceAccount", func() error {
			_, err := join.RequestToken(ctx, hub, ns, "default", time.Hour)
			return err
		}},
		{"request a token of its own that lives 30 days", func() error {
			_, err := join.RequestToken(ctx, hub, ns, join.ServiceAccount, 30*24*time.Hour)
			return err
		}},
		{"create an EndpointSlice that is not a meshfed mirror", func() error {
			return hub.Create(ctx, endpointSlice("shop", "forged", map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}))
		}},
		{"create an EndpointSlice posing as the EndpointSlice controller's", func() error {
			return hub.Create(ctx, endpointSlice("shop", "posing", map[string]string{discoveryv1.LabelManagedBy: meshv1.KubeEndpointSliceManager}))
		}},
		{"take a user's EndpointSlice over", func() error {
			var s discoveryv1.EndpointSlice
			if err := hub.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "users"}, &s); err != nil {
				return err
			}
			s.Labels = map[string]string{discoveryv1.LabelManagedBy: meshv1.EndpointSliceManager}
			return hub.Update(ctx, &s)
		}},
		{"delete a user's EndpointSlice", func() error { return hub.Delete(ctx, endpointSlice("shop", "users", nil)) }},
		{"delete a user's ServiceImport", func() error {
			return hub.Delete(ctx, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "users"}})
		}},
		{"create a ConfigMap other than the intermediate's", func() error {
			return hub.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-root-ca.crt-2"}})
		}},
	}
	// A user's own objects the hub must not touch.
	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))
	testbed.MustCreate(ctx, t, c.Client, endpointSlice("shop", "users", nil))
	testbed.MustCreate(ctx, t, c.Client, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "users"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, Ports: []mcsv1beta1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}})
	// The same credentials write what the hub writes.
	mirror := endpointSlice("shop", "mirror", map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, discoveryv1.LabelManagedBy: meshv1.EndpointSliceManager})
	must(t, hub.Create(ctx, mirror))
	must(t, hub.Delete(ctx, mirror))
	for _, a := range attacks {
		if err := a.do(); !apierrors.IsForbidden(err) {
			t.Errorf("the hub's member credentials could %s: got %v, want Forbidden", a.name, err)
		}
	}

	// The member's intermediate is for the key only the member holds, limited to its trust
	// domain, and no Secret in the hub holds that key.
	var held, key corev1.Secret
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: trust.CACertsSecret}, &held))
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: trust.KeySecret}, &key))
	pair, err := tls.X509KeyPair(held.Data[trust.KeyCert], key.Data[trust.KeyKey])
	if err != nil {
		t.Fatalf("the intermediate is not for the key in %s: %v", trust.KeySecret, err)
	}
	if got := pair.Leaf.PermittedURIDomains; !slices.Equal(got, []string{trustDomain}) || !pair.Leaf.PermittedDNSDomainsCritical {
		t.Errorf("the intermediate's permitted URI domains %v (critical %v), want only %s", got, pair.Leaf.PermittedDNSDomainsCritical, trustDomain)
	}
	var hubSecrets corev1.SecretList
	must(t, c.Client.List(ctx, &hubSecrets, client.InNamespace(hubNS)))
	for _, s := range hubSecrets.Items {
		for k, v := range s.Data {
			if bytes.Contains(v, key.Data[trust.KeyKey]) || k == corev1.TLSPrivateKeyKey && bytes.Equal(v, held.Data[trust.KeyKey]) {
				t.Errorf("hub Secret %s/%s holds the member's intermediate key", s.Namespace, s.Name)
			}
			if k == corev1.TLSCertKey {
				if certs, err := trust.ParseCertificates(v); err == nil && len(certs) > 0 && certs[0].Equal(pair.Leaf) {
					t.Errorf("hub Secret %s/%s holds the member's intermediate with its key", s.Namespace, s.Name)
				}
			}
		}
	}
}
