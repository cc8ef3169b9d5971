// Package scenario builds a federated mesh on a testbed and drives proxyless gRPC traffic
// through it: the steps the end-to-end tests and `make demo` share. Every step checks its
// outcome and returns an error that says what did not happen.
package scenario

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation/join"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/bootstrap"
	"github.com/meshfed/meshfed/testbed"
)

// Names the scenario uses.
const (
	HubNamespace = "meshfed-system"
	Federation   = "global"
	Namespace    = "shop"
	EchoPort     = 9000
	ClientPort   = 8080
	// Target is what clients dial: the echo service across the clusterset.
	Target = "xds:///echo.shop.svc.clusterset.local:9000"
	// InjectLabel on a namespace has its pods meshed (the Mesh's default selector).
	InjectLabel = "meshfed.io/inject"
)

// Mesh is a federation of every cluster of a testbed, the first one the hub.
type Mesh struct {
	TB  *testbed.Testbed
	Hub *testbed.Cluster
}

// Federate joins every cluster to a MeshFederation in the first one (all in one network,
// trust bootstrapped by meshfed), creates the shop namespace everywhere, and waits until
// every member can issue workload certificates and serves xDS.
func Federate(ctx context.Context, tb *testbed.Testbed) (*Mesh, error) {
	return FederateNetworks(ctx, tb, nil)
}

// FederateNetworks is Federate with the network of each cluster (by cluster name; "net-1"
// for those not listed).
func FederateNetworks(ctx context.Context, tb *testbed.Testbed, networks map[string]string) (*Mesh, error) {
	m := &Mesh{TB: tb, Hub: tb.Clusters[0]}
	if err := create(ctx, m.Hub.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: HubNamespace}}); err != nil {
		return nil, err
	}
	fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: HubNamespace, Name: Federation},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned}}}
	for _, c := range tb.Clusters {
		if _, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: m.Hub.Client, HubNamespace: HubNamespace}); err != nil {
			return nil, fmt.Errorf("join %s: %w", c.Name, err)
		}
		for _, obj := range []client.Object{
			&meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName}, Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: cmp.Or(networks[c.Name], "net-1")}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: map[string]string{InjectLabel: "enabled"}}},
		} {
			if err := create(ctx, c.Client, obj); err != nil {
				return nil, err
			}
		}
		fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}})
	}
	if err := create(ctx, m.Hub.Client, fed); err != nil {
		return nil, err
	}
	for _, c := range tb.Clusters {
		err := testbed.Poll(ctx, 2*time.Minute, c.Name+": Mesh TrustReady, ControlPlaneReady and InjectionReady", func() error {
			mesh, err := GetMesh(ctx, c)
			if err != nil {
				return err
			}
			for _, typ := range []string{meshv1.ConditionTrustReady, meshv1.ConditionControlPlaneReady, meshv1.ConditionInjectionReady} {
				if cond := meta.FindStatusCondition(mesh.Status.Conditions, typ); cond == nil || cond.Status != metav1.ConditionTrue {
					return fmt.Errorf("%s %+v", typ, cond)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func create(ctx context.Context, c client.Client, obj client.Object) error {
	if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// GetMesh reads a cluster's Mesh.
func GetMesh(ctx context.Context, c *testbed.Cluster) (*meshv1.Mesh, error) {
	var mesh meshv1.Mesh
	err := c.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh)
	return &mesh, err
}

// ExportEcho creates the echo Service and its ServiceExport in c.
func (m *Mesh) ExportEcho(ctx context.Context, c *testbed.Cluster) error {
	return m.ExportEchoAs(ctx, c, "echo")
}

// ExportEchoAs creates the Service name, of the echo servers labelled app=name, and its
// ServiceExport in c.
func (m *Mesh) ExportEchoAs(ctx context.Context, c *testbed.Cluster, name string) error {
	if err := create(ctx, c.Client, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort)}}}}); err != nil {
		return err
	}
	return create(ctx, c.Client, testbed.ServiceExport(Namespace, name))
}

// WriteIdentitySecret creates or updates the Secret name of the shop namespace with a
// workload's certificate, key and trust bundle, as RunEcho mounts it.
func WriteIdentitySecret(ctx context.Context, c *testbed.Cluster, name string, certPEM, keyPEM, bundlePEM []byte) error {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}}
	_, err := controllerutil.CreateOrUpdate(ctx, c.Client, secret, func() error {
		secret.Data = map[string][]byte{bootstrap.CertFile: certPEM, bootstrap.KeyFile: keyPEM, bootstrap.BundleFile: bundlePEM}
		return nil
	})
	return err
}

// Where RunEcho mounts a workload's xDS bootstrap and identity.
const (
	bootstrapDir = "/etc/meshfed/bootstrap"
	identityDir  = "/var/run/meshfed/identity"
	// EchoControlPort serves an echo server's pod controls (readiness, kill).
	EchoControlPort = 8079
)

// RunEcho runs the echo workload (mode "server" or "client") as a meshed pod of c under
// service account sa whose app brings an xDS bootstrap of its own (a ConfigMap; the
// control plane is still its agent's) with the certificate of the identity Secret (none
// when empty) instead of the agent's, and waits until it is ready. Tests use it to see
// what the mesh does with such a client.
func (m *Mesh) RunEcho(ctx context.Context, c *testbed.Cluster, name, mode, sa, identity string, port int32, labels map[string]string) (*testbed.Workload, error) {
	if err := create(ctx, c.Client, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: sa}}); err != nil {
		return nil, err
	}
	opts := bootstrap.Options{XDSAddress: agent.ListenXDS, NodeID: name + "." + Namespace, Cluster: c.Name, Refresh: time.Second}
	if identity != "" {
		opts.CertDir = identityDir
	}
	boot, err := bootstrap.JSON(opts)
	if err != nil {
		return nil, err
	}
	config := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name + "-xds-bootstrap"}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c.Client, config, func() error {
		config.Data = map[string]string{"bootstrap.json": string(boot)}
		return nil
	}); err != nil {
		return nil, err
	}
	image, err := m.TB.Image(ctx, "echo", "./testbed/cmd/echo")
	if err != nil {
		return nil, err
	}
	spec := testbed.WorkloadSpec{Namespace: Namespace, Name: name, Labels: labels, ServiceAccount: sa,
		Image: image, Args: []string{mode}, Ports: []corev1.ContainerPort{{ContainerPort: port}},
		Env: map[string]string{"GRPC_XDS_BOOTSTRAP": bootstrapDir + "/bootstrap.json", "GRPC_EXPERIMENTAL_XDS_SNI": "true", "GRPC_GO_LOG_SEVERITY_LEVEL": "warning"},
		Volumes: []corev1.Volume{{Name: "xds-bootstrap", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: config.Name}}}}},
		Mounts: []corev1.VolumeMount{{Name: "xds-bootstrap", MountPath: bootstrapDir, ReadOnly: true}},
	}
	if mode == "server" {
		spec.ControlPort = EchoControlPort
	}
	if identity != "" {
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "identity", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: identity}}})
		spec.Mounts = append(spec.Mounts, corev1.VolumeMount{Name: "identity", MountPath: identityDir, ReadOnly: true})
	}
	w, err := c.RunWorkload(ctx, spec)
	if err != nil {
		return nil, err
	}
	return w, w.WaitReady(ctx, true)
}

// RunInjected runs the echo workload (mode "server" or "client") as a plain pod of c under
// service account sa, in the shop namespace, which Federate labelled for injection: the
// webhook adds the agent, which gets the identity and writes the xDS bootstrap. It waits
// until the pod is ready.
func (m *Mesh) RunInjected(ctx context.Context, c *testbed.Cluster, name, mode, sa string, port int32, labels map[string]string) (*testbed.Workload, error) {
	return m.RunInjectedWith(ctx, c, testbed.WorkloadSpec{Name: name, Labels: labels, ServiceAccount: sa}, mode, port)
}

// RunInjectedWith is RunInjected with the pod's name, labels, annotations and service
// account from spec.
func (m *Mesh) RunInjectedWith(ctx context.Context, c *testbed.Cluster, spec testbed.WorkloadSpec, mode string, port int32) (*testbed.Workload, error) {
	return m.runEchoOn(ctx, GRPCGo, c, spec, mode, port, c.RunWorkload)
}

// Implementation is the gRPC library an echo workload is built on.
type Implementation string

const (
	// GRPCGo is testbed/cmd/echo.
	GRPCGo Implementation = "grpc-go"
	// GRPCJS is testbed/grpcjs/echo.js on @grpc/grpc-js-xds.
	GRPCJS Implementation = "grpc-js"
)

// RunInjectedOn is RunInjected with the echo of impl.
func (m *Mesh) RunInjectedOn(ctx context.Context, impl Implementation, c *testbed.Cluster, name, mode, sa string, port int32, labels map[string]string) (*testbed.Workload, error) {
	spec := testbed.WorkloadSpec{Name: name, Labels: labels, ServiceAccount: sa}
	return m.runEchoOn(ctx, impl, c, spec, mode, port, c.RunWorkload)
}

// DeployInjected is RunInjected as a Deployment of one replica: a killed process is
// restarted by the node, as a user's app is.
func (m *Mesh) DeployInjected(ctx context.Context, c *testbed.Cluster, name, mode, sa string, port int32, labels map[string]string) (*testbed.Workload, error) {
	return m.runEchoOn(ctx, GRPCGo, c, testbed.WorkloadSpec{Name: name, Labels: labels, ServiceAccount: sa}, mode, port, c.RunDeployment)
}

// runEchoOn runs the echo workload of impl in the shop namespace with run (a pod or a
// Deployment) and waits until it is ready.
func (m *Mesh) runEchoOn(ctx context.Context, impl Implementation, c *testbed.Cluster, spec testbed.WorkloadSpec, mode string, port int32,
	run func(context.Context, testbed.WorkloadSpec) (*testbed.Workload, error)) (*testbed.Workload, error) {
	if err := create(ctx, c.Client, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: spec.ServiceAccount}}); err != nil {
		return nil, err
	}
	var image string
	var err error
	switch impl {
	case GRPCGo:
		image, err = m.TB.Image(ctx, "echo", "./testbed/cmd/echo")
		spec.Env = map[string]string{"GRPC_GO_LOG_SEVERITY_LEVEL": "warning"}
	case GRPCJS:
		image, err = m.TB.GRPCJSImage(ctx)
	default:
		err = fmt.Errorf("no echo on %q", impl)
	}
	if err != nil {
		return nil, err
	}
	spec.Namespace, spec.Image, spec.Args = Namespace, image, []string{mode}
	spec.Ports = []corev1.ContainerPort{{ContainerPort: port}}
	if mode == "server" {
		spec.ControlPort = EchoControlPort
	}
	w, err := run(ctx, spec)
	if err != nil {
		return nil, err
	}
	return w, w.WaitReady(ctx, true)
}

// Server runs an echo server (service account echo) behind the echo Service of c: a
// plain pod that injection meshes.
func (m *Mesh) Server(ctx context.Context, c *testbed.Cluster, name string) (*testbed.Workload, error) {
	return m.RunInjected(ctx, c, name, "server", "echo", EchoPort, map[string]string{"app": "echo"})
}

// Client runs an echo client (service account client) in c, meshed by injection.
func (m *Mesh) Client(ctx context.Context, c *testbed.Cluster, name string) (*testbed.Workload, error) {
	return m.RunInjected(ctx, c, name, "client", "client", ClientPort, nil)
}

// SetPolicy makes tp the federation's only traffic policy (nil: none) and returns when the
// hub has it.
func (m *Mesh) SetPolicy(ctx context.Context, tp *meshv1.TrafficPolicy) (time.Time, error) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fed meshv1.MeshFederation
		if err := m.Hub.Client.Get(ctx, client.ObjectKey{Namespace: HubNamespace, Name: Federation}, &fed); err != nil {
			return err
		}
		fed.Spec.TrafficPolicies = nil
		if tp != nil {
			fed.Spec.TrafficPolicies = []meshv1.TrafficPolicy{*tp}
		}
		return m.Hub.Client.Update(ctx, &fed)
	})
	return time.Now(), err
}

// RotateRoot starts a rotation of the federation's root to revision, each stage waiting
// delay once every member reports it done, and returns when it has completed, with the
// root fingerprints before and after.
func (m *Mesh) RotateRoot(ctx context.Context, revision string, delay time.Duration) (string, string, error) {
	var before string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fed meshv1.MeshFederation
		if err := m.Hub.Client.Get(ctx, client.ObjectKey{Namespace: HubNamespace, Name: Federation}, &fed); err != nil {
			return err
		}
		if fed.Status.Trust != nil {
			before = fed.Status.Trust.RootFingerprint
		}
		fed.Spec.Trust.Rotation.Revision = revision
		fed.Spec.Trust.Rotation.PropagationDelay = &metav1.Duration{Duration: delay}
		return m.Hub.Client.Update(ctx, &fed)
	})
	if err != nil {
		return "", "", err
	}
	var after string
	err = testbed.Poll(ctx, 5*time.Minute, "the root rotation completed", func() error {
		var fed meshv1.MeshFederation
		if err := m.Hub.Client.Get(ctx, client.ObjectKey{Namespace: HubNamespace, Name: Federation}, &fed); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionRootRotation)
		if fed.Status.Trust == nil || fed.Status.Trust.Rotation != nil || cond == nil || cond.Reason != meshv1.ReasonRotationCompleted ||
			fed.Status.Trust.RootFingerprint == before {
			return fmt.Errorf("RootRotation %+v", cond)
		}
		after = fed.Status.Trust.RootFingerprint
		return nil
	})
	return before, after, err
}

// Policy is a traffic policy for the echo service.
func Policy() *meshv1.TrafficPolicy {
	return &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: Namespace, Name: "echo"}}
}

// Call is one RPC as the client saw it.
type Call struct {
	// At is when it started, in milliseconds since the load began.
	At float64 `json:"at"`
	// Millis is how long it took.
	Millis  float64 `json:"millis"`
	OK      bool    `json:"ok"`
	Cluster string  `json:"cluster"`
	// Pod is the server pod that answered.
	Pod    string `json:"pod"`
	Peer   string `json:"peer"`
	Caller string `json:"caller"`
	Error  string `json:"error"`
}

func httpJSON(ctx context.Context, method, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s %s", method, url, resp.Status, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// Calls makes n calls to Target from a client workload now.
func Calls(ctx context.Context, client *testbed.Workload, n int) ([]Call, error) {
	return CallsWith(ctx, client, n, nil)
}

// CallsWith is Calls with request metadata (headers) on every call.
func CallsWith(ctx context.Context, client *testbed.Workload, n int, headers map[string]string) ([]Call, error) {
	q := url.Values{"target": {Target}, "n": {strconv.Itoa(n)}}
	for name, value := range headers {
		q.Add("header", name+":"+value)
	}
	var out []Call
	err := httpJSON(ctx, http.MethodGet, fmt.Sprintf("http://%s/call?%s", client.Addr(ClientPort), q.Encode()), &out)
	return out, err
}

// SplitCalls is how many calls a split is measured over: picks are random, so over 3000
// calls a share is within 3 points of its weight (the mesh's promise) with four standard
// deviations to spare for 20/80 and three for 50/50, where 1000 calls would miss it in
// one run out of sixty.
const SplitCalls = 3000

// CheckSplit says whether got of n calls is within 3 points of weight (percent).
func CheckSplit(got, n int, weight float64) error {
	share := 100 * float64(got) / float64(n)
	if math.Abs(share-weight) > 3 {
		return fmt.Errorf("%d of %d calls (%.1f %%), want %.0f±3 %%", got, n, share, weight)
	}
	return nil
}

// Split counts calls by the cluster that answered; failures count under "".
func Split(cs []Call) map[string]int {
	out := map[string]int{}
	for _, c := range cs {
		if c.OK {
			out[c.Cluster]++
		} else {
			out[""]++
		}
	}
	return out
}

// Load is a steady stream of calls from a client workload.
type Load struct {
	client  *testbed.Workload
	Started time.Time
}

// StartLoad starts a call every interval.
func StartLoad(ctx context.Context, client *testbed.Workload, interval time.Duration) (*Load, error) {
	return StartLoadWith(ctx, client, interval, nil)
}

// StartLoadWith is StartLoad with request metadata (headers) on every call.
func StartLoadWith(ctx context.Context, client *testbed.Workload, interval time.Duration, headers map[string]string) (*Load, error) {
	q := url.Values{"target": {Target}, "interval": {interval.String()}}
	for name, value := range headers {
		q.Add("header", name+":"+value)
	}
	err := httpJSON(ctx, http.MethodPost, fmt.Sprintf("http://%s/load?%s", client.Addr(ClientPort), q.Encode()), nil)
	return &Load{client: client, Started: time.Now()}, err
}

// SetFailing makes every call an echo server answers fail with Unavailable (or, with
// false, succeed again), as a broken release would.
func SetFailing(ctx context.Context, server *testbed.Workload, failing bool) error {
	return httpJSON(ctx, http.MethodPost, fmt.Sprintf("http://%s/fail?v=%t", server.Addr(EchoControlPort), failing), nil)
}

// Results are the calls of the load so far.
func (l *Load) Results(ctx context.Context) ([]Call, error) {
	var out []Call
	err := httpJSON(ctx, http.MethodGet, "http://"+l.client.Addr(ClientPort)+"/results", &out)
	return out, err
}

// Stop ends the load and returns its calls.
func (l *Load) Stop(ctx context.Context) ([]Call, error) {
	cs, err := l.Results(ctx)
	return cs, errors.Join(err, httpJSON(ctx, http.MethodPost, "http://"+l.client.Addr(ClientPort)+"/stop", nil))
}

// Offset is t in milliseconds since the load began, the unit of Call.At.
func (l *Load) Offset(t time.Time) float64 { return float64(t.Sub(l.Started).Microseconds()) / 1000 }

// SteadyAfter is how long after offset every later call succeeded on cluster; -1 if the
// calls never settled there.
func SteadyAfter(cs []Call, offset float64, cluster string) float64 {
	steady := -1.0
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		if c.At < offset || !c.OK || c.Cluster != cluster {
			break
		}
		steady = c.At - offset
	}
	return steady
}

// AllOn waits until n calls in a row are answered by cluster.
func AllOn(ctx context.Context, client *testbed.Workload, cluster string, n int, timeout time.Duration) error {
	return testbed.Poll(ctx, timeout, "every call answered by "+cluster, func() error {
		cs, err := Calls(ctx, client, n)
		if err != nil {
			return err
		}
		if s := Split(cs); s[cluster] != n {
			for _, c := range cs {
				if !c.OK {
					return fmt.Errorf("split %v, a failed call: %s", s, c.Error)
				}
			}
			return fmt.Errorf("split %v", s)
		}
		return nil
	})
}

// GatewayPort is where the east-west gateways listen (the Mesh's default).
const GatewayPort = meshv1.DefaultGatewayPort

// Gateway is a cluster's east-west gateway: the pods of the Deployment its Mesh
// reconciler writes, behind the address of its LoadBalancer Service.
type Gateway struct {
	// Address is the Mesh's gateway address (the Service's load-balancer address), where
	// other networks reach the cluster.
	Address string
	// Pods are the gateway pods' addresses.
	Pods []string
}

// Gateway waits until c's gateway is ready (the Mesh's GatewayReady condition) and
// returns its address and pods.
func (m *Mesh) Gateway(ctx context.Context, c *testbed.Cluster) (*Gateway, error) {
	gw := &Gateway{}
	err := testbed.Poll(ctx, 2*time.Minute, c.Name+": Mesh GatewayReady", func() error {
		mesh, err := GetMesh(ctx, c)
		if err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionGatewayReady); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("%+v", cond)
		}
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(testbed.MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/name": "meshfed-eastwest-gateway"}); err != nil {
			return err
		}
		gw.Address, gw.Pods = mesh.Status.GatewayAddress, nil
		for _, p := range pods.Items {
			if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				gw.Pods = append(gw.Pods, p.Status.PodIP)
			}
		}
		if len(gw.Pods) == 0 {
			return errors.New("no gateway pod")
		}
		return nil
	})
	return gw, err
}

// GatewayMetric is one metric of a gateway (by the prefix of its line), summed over its
// pods; "" when no pod has it.
func GatewayMetric(ctx context.Context, gw *Gateway, prefix string) string {
	urls := make([]string, len(gw.Pods))
	for i, ip := range gw.Pods {
		urls[i] = "http://" + net.JoinHostPort(ip, "15021") + "/metrics"
	}
	return testbed.MetricSum(ctx, urls, prefix)
}

// Dial tells whether a plain TCP connection from a client workload's pod to addr opens.
func Dial(ctx context.Context, client *testbed.Workload, addr string) (bool, string, error) {
	var out struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	err := httpJSON(ctx, http.MethodGet, fmt.Sprintf("http://%s/dial?addr=%s", client.Addr(ClientPort), addr), &out)
	return out.OK, out.Error, err
}

// ForwardClusterSetDNS waits until every member's meshfed-dns is ready and has each
// cluster DNS forward clusterset.local to it, as docs/user-guide.md tells users to.
func (m *Mesh) ForwardClusterSetDNS(ctx context.Context) error {
	for _, c := range m.TB.Clusters {
		var address string
		err := testbed.Poll(ctx, 2*time.Minute, c.Name+": Mesh DNSReady", func() error {
			mesh, err := GetMesh(ctx, c)
			if err != nil {
				return err
			}
			if cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionDNSReady); cond == nil || cond.Status != metav1.ConditionTrue {
				return fmt.Errorf("DNSReady %+v", cond)
			}
			address = mesh.Status.DNSAddress
			return nil
		})
		if err != nil {
			return err
		}
		if err := c.ForwardClusterSet(ctx, address); err != nil {
			return err
		}
	}
	return nil
}

// ImportBackend is a GRPCRoute backendRef to the echo port of ServiceImport name.
func ImportBackend(name string) gatewayv1.GRPCBackendRef {
	return gatewayv1.GRPCBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
		Group: ptr.To(gatewayv1.Group(mcsv1beta1.GroupName)), Kind: ptr.To(gatewayv1.Kind("ServiceImport")),
		Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(EchoPort))}}}
}

// CanaryRoute is the GRPCRoute name of the shop namespace, attached to ServiceImport
// service (GAMMA): calls carrying header: value go to ServiceImport canary, the others to
// service.
func CanaryRoute(name, service, canary, header, value string) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}, Spec: gatewayv1.GRPCRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
			Group: ptr.To(gatewayv1.Group(mcsv1beta1.GroupName)), Kind: ptr.To(gatewayv1.Kind("ServiceImport")), Name: gatewayv1.ObjectName(service)}}},
		Rules: []gatewayv1.GRPCRouteRule{
			{
				Matches:     []gatewayv1.GRPCRouteMatch{{Headers: []gatewayv1.GRPCHeaderMatch{{Name: gatewayv1.GRPCHeaderName(header), Value: value}}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{ImportBackend(canary)},
			},
			{BackendRefs: []gatewayv1.GRPCBackendRef{ImportBackend(service)}},
		},
	}}
}

// AllowOnly is the ServicePolicy name of the shop namespace that lets only the callers
// with SPIFFE ID caller call ServiceImport service.
func AllowOnly(name, service, caller string) *meshv1.ServicePolicy {
	return &meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}, Spec: meshv1.ServicePolicySpec{
		TargetRefs: []meshv1.PolicyTargetReference{{Group: mcsv1beta1.GroupName, Kind: "ServiceImport", Name: service}},
		Authorization: &meshv1.Authorization{Rules: []meshv1.AuthorizationRule{{Action: meshv1.ActionAllow,
			From: []meshv1.Caller{{SPIFFEID: caller}}}}}}}
}
