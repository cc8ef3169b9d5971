package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"

	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Scheme knows every type a testbed client reads or writes: Kubernetes, CRDs, meshfed,
// MCS and cert-manager.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	utilruntime.Must(aboutv1alpha1.AddToScheme(s))
	utilruntime.Must(mcsv1beta1.Install(s))
	utilruntime.Must(gatewayv1.Install(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}()

// Cluster is one local cluster of the testbed.
type Cluster struct {
	// Name is "cluster-<n>"; it is also the kubeconfig context name.
	Name string
	// Index is the cluster's position in the testbed, from 0.
	Index int
	// Octet is the second byte of the cluster's addresses (127.<octet>.0.1, 198.18.<octet>.x).
	Octet int
	// Dir holds the cluster's kubeconfig, certificates and logs.
	Dir string
	// Server is the API server URL.
	Server string
	// KubeconfigPath is an admin kubeconfig for the cluster.
	KubeconfigPath string
	// Config is the admin REST config.
	Config *rest.Config
	// Client is a controller-runtime client with the testbed Scheme.
	Client client.Client
	// Kube is a client-go clientset.
	Kube kubernetes.Interface

	tb            *Testbed
	apiserverArgs []string
	apiserver     *process
	kcm           *process
	certManager   *process
	scheduler     *process
	node          *process
	proxy         *process
	network       *podNetwork
	// runCtx ends when the cluster stops: the testbed's own controllers run under it.
	runCtx  context.Context
	stopRun context.CancelFunc
	// scrapeToken is the token the testbed reads the operator's metrics with.
	scrapeMu    sync.Mutex
	scrapeToken string
}

func (c *Cluster) start(ctx context.Context, manifests [][]byte) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	c.runCtx, c.stopRun = context.WithCancel(context.Background())
	var err error
	if canCreateNetns() {
		if c.network, err = setupPodNetwork(c.Octet); err != nil {
			return fmt.Errorf("pod network: %w", err)
		}
	}
	ip := c.apiServerAddress()
	c.tb.progress("%s: starting kube-apiserver on %s", c.Name, ip)
	ca, err := newPKI(c.Name + "-ca")
	if err != nil {
		return err
	}
	port, err := FreePort(ip)
	if err != nil {
		return err
	}
	c.Server = "https://" + net.JoinHostPort(ip, strconv.Itoa(port))
	certs, err := c.writeCredentials(ca)
	if err != nil {
		return err
	}
	podCreds, err := c.writePodCredentials(ca)
	if err != nil {
		return err
	}
	saKey, saPub, err := writeServiceAccountKey(c.Dir)
	if err != nil {
		return err
	}
	c.apiserverArgs = []string{
		c.tb.bin("kube-apiserver"),
		"--etcd-servers=" + c.tb.etcdURL,
		"--etcd-prefix=/meshfed-testbed/" + c.Name,
		"--bind-address=" + ip,
		"--advertise-address=" + ip,
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + certs.servingCert,
		"--tls-private-key-file=" + certs.servingKey,
		"--client-ca-file=" + certs.ca,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		// kubectl logs reaches the node's API with the API server's client certificate,
		// and the node's serving certificate is checked.
		"--kubelet-client-certificate=" + certs.kubeletClientCert,
		"--kubelet-client-key=" + certs.kubeletClientKey,
		"--kubelet-certificate-authority=" + certs.ca,
		"--kubelet-preferred-address-types=InternalIP",
		// The API server lives on the host, where Service addresses mean nothing: it calls
		// webhooks and aggregated APIs at their Services' endpoints.
		"--enable-aggregator-routing=true",
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return err
	}

	c.tb.progress("%s: installing CRDs", c.Name)
	if err := installCRDs(ctx, c.Client, manifests); err != nil {
		return err
	}
	if err := c.ensureNamespace(ctx, "cert-manager"); err != nil {
		return err
	}

	c.tb.progress("%s: starting kube-controller-manager and cert-manager", c.Name)
	c.kcm, err = c.tb.start(c.Name+"/kube-controller-manager", filepath.Join(c.Dir, "kube-controller-manager.log"), []string{
		c.tb.bin("kube-controller-manager"),
		"--kubeconfig=" + certs.kcmKubeconfig,
		"--authentication-kubeconfig=" + certs.kcmKubeconfig,
		"--authorization-kubeconfig=" + certs.kcmKubeconfig,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + saKey,
		"--root-ca-file=" + certs.ca,
		"--leader-elect=false",
		"--bind-address=" + ip,
		"--secure-port=0",
	})
	if err != nil {
		return err
	}
	c.certManager, err = c.tb.start(c.Name+"/cert-manager", filepath.Join(c.Dir, "cert-manager.log"), []string{
		c.tb.bin("cert-manager-controller"),
		"--kubeconfig=" + c.KubeconfigPath,
		"--cluster-resource-namespace=cert-manager",
	})
	if err != nil {
		return err
	}

	if c.tb.opts.Pods && c.network != nil {
		if err := c.startPods(ctx, podCreds, certs.ca); err != nil {
			return err
		}
		if c.tb.opts.Operator {
			if err := c.runLoadBalancers(c.runCtx); err != nil {
				return err
			}
			if err := c.installMeshfed(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// The cluster's Service ranges (dual-stack, so that a test can make an IPv6 Service; pods
// are IPv4), and the ClusterIP of the kubernetes Service (the first).
const (
	serviceCIDR         = "10.96.0.0/16,fd00:10:96::/112"
	kubernetesServiceIP = "10.96.0.1"
)

// apiServerAddress is where the API server listens: on loopback, or, when the cluster
// runs pods, at the host end of the pod network, where pods reach it through the
// kubernetes Service.
func (c *Cluster) apiServerAddress() string {
	if c.tb.opts.Pods && c.network != nil {
		return c.network.hostIP()
	}
	return apiServerIP(c.Octet)
}

type credentials struct {
	ca, servingCert, servingKey, kcmKubeconfig string
	kubeletClientCert, kubeletClientKey        string
}

// writeCredentials writes the serving certificate, the admin kubeconfig users and tests
// use, and the kube-controller-manager's own kubeconfig.
func (c *Cluster) writeCredentials(ca *pki) (credentials, error) {
	ip := net.ParseIP(c.apiServerAddress())
	// Pods reach the API server at the kubernetes Service's ClusterIP.
	servingCert, servingKey, err := ca.issue("kube-apiserver", nil, []net.IP{ip, net.ParseIP(kubernetesServiceIP)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return credentials{}, err
	}
	adminCert, adminKey, err := ca.issue("meshfed-testbed-admin", []string{"system:masters"}, nil, nil)
	if err != nil {
		return credentials{}, err
	}
	kcmCert, kcmKey, err := ca.issue("system:kube-controller-manager", nil, nil, nil)
	if err != nil {
		return credentials{}, err
	}
	kubeletClientCert, kubeletClientKey, err := ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil)
	if err != nil {
		return credentials{}, err
	}
	creds := credentials{
		ca:            filepath.Join(c.Dir, "ca.crt"),
		servingCert:   filepath.Join(c.Dir, "apiserver.crt"),
		servingKey:    filepath.Join(c.Dir, "apiserver.key"),
		kcmKubeconfig: filepath.Join(c.Dir, "kube-controller-manager.kubeconfig"),

		kubeletClientCert: filepath.Join(c.Dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(c.Dir, "apiserver-kubelet-client.key"),
	}
	c.KubeconfigPath = filepath.Join(c.Dir, "kubeconfig.yaml")
	if err := writeFiles(map[string][]byte{
		creds.ca:          ca.certPEM(),
		creds.servingCert: servingCert,
		creds.servingKey:  servingKey,

		creds.kubeletClientCert: kubeletClientCert,
		creds.kubeletClientKey:  kubeletClientKey,
	}); err != nil {
		return credentials{}, err
	}
	if err := writeKubeconfig(c.KubeconfigPath, c.Name, c.Server, ca.certPEM(), adminCert, adminKey); err != nil {
		return credentials{}, err
	}
	if err := writeKubeconfig(creds.kcmKubeconfig, c.Name, c.Server, ca.certPEM(), kcmCert, kcmKey); err != nil {
		return credentials{}, err
	}
	return creds, nil
}

func writeKubeconfig(path, name, server string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.WriteToFile(*cfg, path)
}

// StopAPIServer kills the cluster's kube-apiserver at once, as a crash or a partition
// would; the other processes keep running and reconnect when StartAPIServer brings it back.
func (c *Cluster) StopAPIServer() {
	c.apiserver.stop(0)
}

// StartAPIServer starts the cluster's kube-apiserver (again) and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.apiserver != nil && !c.apiserver.exited() {
		return errors.New("the kube-apiserver of " + c.Name + " is running")
	}
	var err error
	c.apiserver, err = c.tb.start(c.Name+"/kube-apiserver", filepath.Join(c.Dir, "kube-apiserver.log"), c.apiserverArgs)
	if err != nil {
		return err
	}
	return c.connect(ctx)
}

// connect builds the clients and waits until the API server reports ready.
func (c *Cluster) connect(ctx context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	c.Config = cfg
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if c.Client, err = client.New(cfg, client.Options{Scheme: Scheme}); err != nil {
		return err
	}
	return PollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.Name+" kube-apiserver ready", func(ctx context.Context) error {
		if c.apiserver.exited() {
			return c.apiserver.exitError()
		}
		if body, err := c.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		return nil
	})
}

func (c *Cluster) ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// stop stops the cluster's processes in reverse start order; a kube-apiserver whose etcd
// is gone can hang on SIGTERM, so every stop is bounded and ends in SIGKILL.
func (c *Cluster) stop() {
	// The node stops its pods (the operator's among them) when it is told to stop.
	if c.node != nil {
		c.node.stop(10 * time.Second)
	}
	if c.scheduler != nil {
		c.scheduler.stop(5 * time.Second)
	}
	if c.proxy != nil {
		c.proxy.stop(5 * time.Second)
	}
	if c.stopRun != nil {
		c.stopRun()
	}
	for _, p := range []*process{c.certManager, c.kcm, c.apiserver} {
		if p != nil {
			p.stop(10 * time.Second)
		}
	}
	if c.network != nil {
		c.network.teardown()
	}
}

// HostIP is the loopback address of the cluster: its API server and operator listen
// there, and so can anything a test wants the API server to call (a webhook server).
func (c *Cluster) HostIP() string { return apiServerIP(c.Octet) }
