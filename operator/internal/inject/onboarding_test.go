package inject_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/internal/testpki"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/inject"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOnboarding: plain pods in a namespace labelled for injection join the mesh on their
// own (the agent gets their identity from the member's CA service) and call each other
// with mutual SPIFFE authentication.
func TestOnboarding(t *testing.T) {
	ctx, c, m, cl := meshedCluster(t)
	must(t, m.ExportEcho(ctx, c))
	_, err := m.RunInjected(ctx, c, "echo-0", "server", "echo", sc.EchoPort, map[string]string{"app": "echo"})
	must(t, err)

	t.Run("the webhook adds the agent as a native sidecar and leaves the app its own", func(t *testing.T) {
		var pod corev1.Pod
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: "echo-0"}, &pod))
		if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != inject.AgentContainer ||
			pod.Spec.InitContainers[0].RestartPolicy == nil || *pod.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("init containers %+v", pod.Spec.InitContainers)
		}
		if pod.Annotations[inject.AnnotationInjected] != inject.TemplateGRPCAgent {
			t.Errorf("annotations %v", pod.Annotations)
		}
	})

	t.Run("calls are mutually authenticated with the identities the agents got", func(t *testing.T) {
		must(t, sc.AllOn(ctx, cl, c.Name, 20, time.Minute))
		for _, call := range must1(t)(sc.Calls(ctx, cl, 10)) {
			if call.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || call.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("the client saw %q, the server saw %q", call.Peer, call.Caller)
			}
		}
	})

	t.Run("the agent renews at half the lifetime, and the app uses each new certificate", func(t *testing.T) {
		short, err := m.RunInjectedWith(ctx, c, testbed.WorkloadSpec{Name: "short-lived", ServiceAccount: "client",
			Annotations: map[string]string{inject.AnnotationLifetime: "1m"}}, "client", sc.ClientPort)
		must(t, err)
		started := time.Now()
		metrics := "http://" + short.Addr(inject.AgentHealthPort) + "/metrics"
		// Two renewals: the first certificate (one minute) is gone by the second.
		must(t, testbed.Poll(ctx, 2*time.Minute, "two renewals", func() error {
			if v := testbed.Metric(ctx, metrics, "meshfed_agent_certificates_total "); v != "3" {
				return fmt.Errorf("certificates %q", v)
			}
			return nil
		}))
		took := time.Since(started)
		t.Logf("RENEWAL: the third certificate %s after the pod started (lifetime 1 min)", took.Round(time.Second))
		if took < 55*time.Second {
			t.Errorf("two renewals within %s: not at half a one-minute lifetime", took)
		}
		for _, call := range must1(t)(sc.Calls(ctx, short, 10)) {
			if !call.OK || call.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("a call after the renewals: %+v", call)
			}
		}
	})

	t.Run("a down webhook blocks only new pods of meshed namespaces, never kube-system", func(t *testing.T) {
		downWebhook(ctx, t, c)
	})
}

// TestOnboardingRefusesWhatIsNotThePodsOwn attacks the CA service (tokens and CSRs that
// are not the pod's own) and the xDS server (clients without a federation certificate,
// nodes that disagree with their certificate).
// meshedCluster is a one-cluster federation whose shop namespace is meshed, with an
// injected echo client (service account client) running.
func meshedCluster(t *testing.T) (context.Context, *testbed.Cluster, *sc.Mesh, *testbed.Workload) {
	t.Helper()
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1, Operator: true})
	testbed.RequireWorkloads(t, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	c := tb.Clusters[0]
	m, err := sc.Federate(ctx, tb)
	must(t, err)
	cl, err := m.RunInjected(ctx, c, "client", "client", "client", sc.ClientPort, nil)
	must(t, err)
	return ctx, c, m, cl
}

// Last in TestOnboarding: it stops the operator.
func downWebhook(ctx context.Context, t *testing.T, c *testbed.Cluster) {
	must(t, c.StopOperator(ctx))
	defer func() { must(t, c.StartOperator(ctx)) }()
	pod := func(ns string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "while-down", Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}}}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		allowed bool
	}{
		{"a kube-system pod", pod("kube-system", nil), true},
		{"a kube-system pod that asks for injection", pod("kube-system", map[string]string{inject.LabelInject: inject.Enabled}), true},
		{"a pod of a namespace without injection", pod("default", nil), true},
		{"a pod that opts out", pod(sc.Namespace, map[string]string{inject.LabelInject: inject.Disabled}), true},
		{"a pod of a meshed namespace", pod(sc.Namespace, nil), false},
	} {
		err := c.Client.Create(ctx, tc.pod, client.DryRunAll)
		if (err == nil) != tc.allowed {
			t.Errorf("%s: created %v (%v), want %v", tc.name, err == nil, err, tc.allowed)
		} else if err != nil {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func TestOnboardingRefusesWhatIsNotThePodsOwn(t *testing.T) {
	ctx, c, m, cl := meshedCluster(t)
	var pod corev1.Pod
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: cl.Name}, &pod))
	own := "spiffe://cluster.local/ns/shop/sa/client"
	token := func(t *testing.T, sa string, audience string, bound *corev1.Pod) string {
		t.Helper()
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)}}
		if bound != nil {
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		resp, err := c.Kube.CoreV1().ServiceAccounts(sc.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		must(t, err)
		return resp.Status.Token
	}

	t.Run("the pod's own token and identity are signed", func(t *testing.T) {
		if status, reason := askCA(ctx, t, c, token(t, "client", caapi.Audience, &pod), own); status != http.StatusOK {
			t.Fatalf("status %d %s", status, reason)
		}
	})
	for _, tc := range []struct {
		name, token, id, reason string
	}{
		{"a CSR for another service account", token(t, "client", caapi.Audience, &pod), "spiffe://cluster.local/ns/shop/sa/echo", "IdentityMismatch"},
		{"a CSR for another namespace", token(t, "client", caapi.Audience, &pod), "spiffe://cluster.local/ns/meshfed-system/sa/meshfed-operator", "IdentityMismatch"},
		{"a token for the API server's audience", token(t, "client", "https://kubernetes.default.svc.cluster.local", &pod), own, "TokenRejected"},
		{"a token bound to no pod", token(t, "client", caapi.Audience, nil), own, "TokenNotBoundToPod"},
		{"no token", "", own, "NoToken"},
		{"a token signed by no one", "eyJhbGciOiJub25lIn0.e30.", own, "TokenRejected"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			if status, reason := askCA(ctx, t, c, tc.token, tc.id); reason != tc.reason {
				t.Errorf("status %d reason %q, want %q", status, reason, tc.reason)
			}
		})
	}
	t.Run("refused: an expired token", func(t *testing.T) {
		expired, err := c.ForgeToken(token(t, "client", caapi.Audience, &pod), func(claims map[string]any) {
			now := time.Now().Unix()
			claims["iat"], claims["nbf"], claims["exp"] = now-3600, now-3600, now-60
		})
		must(t, err)
		if status, reason := askCA(ctx, t, c, expired, own); reason != "TokenRejected" {
			t.Errorf("status %d reason %q, want TokenRejected", status, reason)
		}
	})
	t.Run("refused: the token of a deleted pod", func(t *testing.T) {
		doomed, err := m.RunInjected(ctx, c, "doomed", "client", "client", sc.ClientPort, nil)
		must(t, err)
		var p corev1.Pod
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: doomed.Name}, &p))
		stale := token(t, "client", caapi.Audience, &p)
		must(t, c.Client.Delete(ctx, &p, client.GracePeriodSeconds(0)))
		must(t, testbed.Poll(ctx, time.Minute, "the pod gone", func() error {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(&p), &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%w)", err)
		}))
		if status, reason := askCA(ctx, t, c, stale, own); reason != "TokenRejected" && reason != "PodGone" {
			t.Errorf("status %d reason %q, want TokenRejected or PodGone", status, reason)
		}
	})
	t.Run("the xDS server serves only clients of the federation, as the node their certificate allows", func(t *testing.T) {
		_, _, cert := callCA(ctx, t, c, token(t, "client", caapi.Audience, &pod), own)
		if cert == nil {
			t.Fatal("no certificate for the pod's own identity")
		}
		foreign := testpki.New(t).Workload(t, own) // a CA outside the federation
		// A pod of the same service account injected with the envoy template: its node is
		// an Envoy (it need not run: Envoy cannot here).
		envoyPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "sidecar",
			Annotations: map[string]string{inject.AnnotationTemplate: inject.TemplateEnvoy}},
			Spec: corev1.PodSpec{ServiceAccountName: "client", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}}}
		must(t, c.Client.Create(ctx, envoyPod))
		if envoyPod.Annotations[inject.AnnotationInjected] != inject.TemplateEnvoy {
			t.Fatalf("the pod was not injected with the envoy template: %v", envoyPod.Annotations)
		}
		node := func(id string, group string) *corev3.Node {
			n := &corev3.Node{Id: id, Cluster: c.Name}
			if group != "" {
				n.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{"meshfed.io/proxy": structpb.NewStringValue(group)}}
			}
			return n
		}
		for _, tc := range []struct {
			name   string
			cert   *tls.Certificate // nil: plaintext
			node   *corev3.Node
			served bool
		}{
			{"the pod's certificate and its node", cert, node("client.shop", ""), true},
			{"a plaintext client", nil, node("client.shop", ""), false},
			{"a certificate of another CA", &foreign, node("client.shop", ""), false},
			{"a node in another namespace", cert, node("admin.kube-system", ""), false},
			{"a workload that claims to be a gateway", cert, node("client.shop", "gateway"), false},
			{"a workload that claims to be an Envoy", cert, node("client.shop", "envoy"), false},
			{"the pod the envoy template injected, as an Envoy", cert, node("sidecar.shop", "envoy"), true},
			{"the pod the envoy template injected, claiming to be a gateway", cert, node("sidecar.shop", "gateway"), false},
		} {
			err := xdsStream(ctx, t, c, tc.cert, tc.node)
			if (err == nil) != tc.served {
				t.Errorf("%s: served %v (%v), want %v", tc.name, err == nil, err, tc.served)
			} else {
				t.Logf("%s: %v", tc.name, err)
			}
		}
		for _, reason := range []string{"NodeMismatch", "GroupMismatch"} {
			if v := c.OperatorMetric(ctx, `meshfed_xds_refused_total{reason="`+reason+`"}`); v == "" || v == "0" {
				t.Errorf("xDS refusals for %s: %q", reason, v)
			}
		}
	})

	t.Run("refusals are counted by reason and logged without key material", func(t *testing.T) {
		for _, reason := range []string{"IdentityMismatch", "TokenRejected", "TokenNotBoundToPod", "NoToken"} {
			if v := c.OperatorMetric(ctx, `meshfed_ca_refused_total{reason="`+reason+`"}`); v == "" || v == "0" {
				t.Errorf("refusals for %s: %q", reason, v)
			}
		}
		logs, err := c.OperatorLogs(ctx)
		must(t, err)
		if !strings.Contains(logs, "IdentityMismatch") {
			t.Error("the operator's log does not name the refusals")
		}
		for _, secret := range []string{"CERTIFICATE REQUEST", "PRIVATE KEY", "eyJ"} {
			if strings.Contains(logs, secret) {
				t.Errorf("the operator's log holds %q", secret)
			}
		}
	})
}

// askCA sends a CSR for id with token to c's CA service (an operator pod, trusted through
// the trust-bundle ConfigMap, as an agent does) and returns the status and the refusal's
// reason.
func askCA(ctx context.Context, t *testing.T, c *testbed.Cluster, token, id string) (int, string) {
	t.Helper()
	status, reason, _ := callCA(ctx, t, c, token, id)
	return status, reason
}

// roots is the federation's trust bundle as c's shop namespace has it.
func roots(ctx context.Context, t *testing.T, c *testbed.Cluster) *x509.CertPool {
	t.Helper()
	var cm corev1.ConfigMap
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: caapi.TrustBundleConfigMap}, &cm))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[caapi.TrustBundleKey])) {
		t.Fatal("no trust bundle")
	}
	return pool
}

// operatorAddr is an operator pod's address for port.
func operatorAddr(ctx context.Context, t *testing.T, c *testbed.Cluster, port int) string {
	t.Helper()
	var pods corev1.PodList
	must(t, c.Client.List(ctx, &pods, client.InNamespace(testbed.MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/component": "operator"}))
	for _, p := range pods.Items {
		if p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
			return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))
		}
	}
	t.Fatal("no running operator pod")
	return ""
}

// callCA is askCA that also returns the certificate (with its key) when one is signed.
func callCA(ctx context.Context, t *testing.T, c *testbed.Cluster, token, id string) (int, string, *tls.Certificate) {
	t.Helper()
	roots, addr := roots(ctx, t, c), operatorAddr(ctx, t, c, caapi.Port)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	u, err := url.Parse(id)
	must(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	must(t, err)
	body, err := json.Marshal(caapi.SignRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	must(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+caapi.Path, bytes.NewReader(body))
	must(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: caapi.ServiceName + "." + testbed.MeshfedNamespace + ".svc", MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var r caapi.Refusal
		must(t, json.NewDecoder(resp.Body).Decode(&r))
		t.Logf("%s: %d %s: %s", id, resp.StatusCode, r.Reason, r.Message)
		return resp.StatusCode, r.Reason, nil
	}
	var signed caapi.SignResponse
	must(t, json.NewDecoder(resp.Body).Decode(&signed))
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	pair, err := tls.X509KeyPair([]byte(signed.CertChain), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	must(t, err)
	return resp.StatusCode, "", &pair
}

// xdsStream opens an ADS stream to an operator pod of c as node, with cert (nil:
// plaintext), and returns nil once the control plane answers.
func xdsStream(ctx context.Context, t *testing.T, c *testbed.Cluster, cert *tls.Certificate, node *corev3.Node) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	creds := insecure.NewCredentials()
	if cert != nil {
		creds = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: roots(ctx, t, c),
			ServerName: "meshfed-xds." + testbed.MeshfedNamespace + ".svc", MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(operatorAddr(ctx, t, c, 15010), grpc.WithTransportCredentials(creds))
	must(t, err)
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func must1(t testing.TB) func([]sc.Call, error) []sc.Call {
	return func(cs []sc.Call, err error) []sc.Call {
		t.Helper()
		must(t, err)
		return cs
	}
}
