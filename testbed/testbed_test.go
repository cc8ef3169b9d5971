package testbed_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/testbed"
)

// TestThreeClusters proves what every later test relies on: three clusters with their
// CRDs, real garbage collection, real cert-manager issuance, workload pods that answer on
// their IPs, a running operator, and nothing left behind after Stop.
func TestThreeClusters(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 3, Operator: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("every cluster serves the meshfed, MCS and cert-manager CRDs", func(t *testing.T) {
		want := []string{
			"meshes.meshfed.io", "meshfederations.meshfed.io", "meshpeers.meshfed.io",
			"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io",
			"certificates.cert-manager.io", "issuers.cert-manager.io", "clusterissuers.cert-manager.io",
		}
		for _, c := range tb.Clusters {
			for _, name := range want {
				var crd apiextensionsv1.CustomResourceDefinition
				if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
					t.Fatalf("%s: CRD %s: %v", c.Name, name, err)
				}
				if !crdEstablished(&crd) {
					t.Errorf("%s: CRD %s is not established", c.Name, name)
				}
			}
		}
	})

	t.Run("garbage collection deletes a Secret owned by a deleted ConfigMap", func(t *testing.T) {
		c := tb.Clusters[1]
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "owner"}}
		testbed.MustCreate(ctx, t, c.Client, owner)
		owned := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "owned",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}},
		}}
		testbed.MustCreate(ctx, t, c.Client, owned)
		if err := c.Client.Delete(ctx, owner); err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 30*time.Second, "owned Secret garbage-collected", func() error {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(owned), &corev1.Secret{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("secret still there (err=%w)", err)
		})
	})

	t.Run("cert-manager issues a self-signed CA and a leaf it signs, in every cluster", func(t *testing.T) {
		for _, c := range tb.Clusters {
			caPEM, leafPEM := issueCAAndLeaf(ctx, t, c)
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(caPEM) {
				t.Fatalf("%s: CA secret holds no certificate", c.Name)
			}
			leaf := parseCert(t, leafPEM)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "echo.demo.svc"}); err != nil {
				t.Errorf("%s: leaf does not chain to the CA: %v", c.Name, err)
			}
			if ca := parseCert(t, caPEM); !ca.IsCA || ca.Subject.CommonName != "testbed-root" {
				t.Errorf("%s: CA certificate: isCA=%v CN=%q", c.Name, ca.IsCA, ca.Subject.CommonName)
			}
		}
	})

	t.Run("a workload answers on its pod IP, shows Ready and lands in its Service's EndpointSlice", func(t *testing.T) {
		testbed.RequireWorkloads(t, tb)
		c := tb.Clusters[2]
		testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}})
		testbed.MustCreate(ctx, t, c.Client, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "echo"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		})
		w, err := c.RunWorkload(ctx, testbed.WorkloadSpec{
			Namespace: "demo", Name: "echo-0", Labels: map[string]string{"app": "echo"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WaitReady(ctx, true); err != nil {
			t.Fatal(err)
		}
		body := httpGet(ctx, t, "http://"+w.Addr(8080)+"/")
		if want := "pod=echo-0 namespace=demo cluster=" + c.Name; strings.TrimSpace(body) != want {
			t.Errorf("workload answered %q, want %q", body, want)
		}
		var pod corev1.Pod
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "echo-0"}, &pod); err != nil {
			t.Fatal(err)
		}
		if pod.Status.PodIP != w.IP || pod.Status.Phase != corev1.PodRunning {
			t.Errorf("pod status: ip=%s phase=%s, want ip=%s Running", pod.Status.PodIP, pod.Status.Phase, w.IP)
		}
		waitEndpoint(ctx, t, c, w.IP, true)

		if err := w.SetReady(ctx, false); err != nil {
			t.Fatal(err)
		}
		waitEndpoint(ctx, t, c, w.IP, false)
		if err := w.SetReady(ctx, true); err != nil {
			t.Fatal(err)
		}
		waitEndpoint(ctx, t, c, w.IP, true)
	})

	t.Run("the processor time of each process is known by name", func(t *testing.T) {
		cpu := tb.CPUTime()
		for _, name := range []string{"etcd", "cluster-1/kube-apiserver", "cluster-3/kube-controller-manager", "cluster-2/node", "cluster-2/kube-proxy"} {
			if cpu[name] <= 0 {
				t.Errorf("no processor time for %s: %v", name, cpu)
			}
		}
	})

	t.Run("the operator serves health, metrics and profiles and exits cleanly on SIGTERM", func(t *testing.T) {
		c := tb.Clusters[0]
		if body := httpGet(ctx, t, c.OperatorProbeURL(ctx)+"/healthz"); body != "ok" {
			t.Errorf("/healthz answered %q", body)
		}
		if v := c.OperatorMetric(ctx, `meshfed_build_info{role="both",version="testbed"} `); v == "" {
			t.Errorf("/metrics has no meshfed_build_info for role both")
		}
		if index := httpGet(ctx, t, c.OperatorPprofURL(ctx)+"/debug/pprof/"); !strings.Contains(index, "goroutine") {
			t.Errorf("/debug/pprof/ lists no goroutine profile:\n%.500s", index)
		}
		if err := c.StopOperator(ctx); err != nil {
			t.Errorf("operator did not exit cleanly on SIGTERM: %v", err)
		}
	})

	pods := tb.PodPIDs()
	if len(pods) == 0 {
		t.Error("no pod processes before Stop")
	}
	tb.Stop()
	for _, pid := range pods {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("pod process %d still running after Stop", pid)
		}
	}
	if left := tb.LeftoverPIDs(); len(left) > 0 {
		t.Errorf("processes still running after Stop: %v", left)
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err == nil {
		for _, c := range tb.Clusters {
			if strings.Contains(string(out), fmt.Sprintf("mftb%d ", c.Octet)) || strings.Contains(string(out), fmt.Sprintf("mftb%d\n", c.Octet)) {
				t.Errorf("network namespace of %s left after Stop:\n%s", c.Name, out)
			}
		}
	}
}

// issueCAAndLeaf makes cert-manager bootstrap a root CA (self-signed Issuer → CA
// Certificate → CA Issuer) and sign a leaf, and returns both PEM certificates.
func issueCAAndLeaf(ctx context.Context, t *testing.T, c *testbed.Cluster) (caPEM, leafPEM []byte) {
	t.Helper()
	ns := "pki"
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "selfsigned"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "root"},
		Spec: cmapi.CertificateSpec{
			IsCA: true, CommonName: "testbed-root", SecretName: "root-ca",
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Name: "selfsigned", Kind: "Issuer"},
		},
	})
	waitReady := func(name string) {
		testbed.Eventually(t, 60*time.Second, c.Name+" Certificate "+name+" Ready", func() error {
			var cert cmapi.Certificate
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cert); err != nil {
				return err
			}
			for _, cond := range cert.Status.Conditions {
				if cond.Type == cmapi.CertificateConditionReady {
					if cond.Status == cmmeta.ConditionTrue {
						return nil
					}
					return fmt.Errorf("Ready=%s: %s", cond.Status, cond.Message)
				}
			}
			return fmt.Errorf("no Ready condition yet")
		})
	}
	// The CA Issuer and the leaf come once the root is issued, so the leaf is signed by the
	// key in root-ca and nothing else (CI once saw a leaf that did not verify against it).
	waitReady("root")
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "root"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "root-ca"}}},
	})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leaf"},
		Spec: cmapi.CertificateSpec{
			DNSNames: []string{"echo.demo.svc"}, SecretName: "leaf-tls",
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Name: "root", Kind: "Issuer"},
		},
	})
	waitReady("leaf")
	var root cmapi.Certificate
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root"}, &root); err != nil {
		t.Fatal(err)
	}
	if r := root.Status.Revision; r == nil || *r != 1 {
		t.Errorf("%s: the root was issued %v times, want once", c.Name, r)
	}
	var ca, leaf corev1.Secret
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root-ca"}, &ca); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "leaf-tls"}, &leaf); err != nil {
		t.Fatal(err)
	}
	return ca.Data["tls.crt"], leaf.Data["tls.crt"]
}

func waitEndpoint(ctx context.Context, t *testing.T, c *testbed.Cluster, ip string, ready bool) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, fmt.Sprintf("%s in EndpointSlice with ready=%v", ip, ready), func() error {
		var slices discoveryv1.EndpointSliceList
		if err := c.Client.List(ctx, &slices, client.InNamespace("demo"), client.MatchingLabels{discoveryv1.LabelServiceName: "echo"}); err != nil {
			return err
		}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) > 0 && ep.Addresses[0] == ip && ptr.Deref(ep.Conditions.Ready, false) == ready {
					return nil
				}
			}
		}
		return fmt.Errorf("not yet (%d slices)", len(slices.Items))
	})
}

func crdEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

func httpGet(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func parseCert(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemData)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
