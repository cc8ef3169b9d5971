package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The operator's ports, as config/manager sets them (pprof as the testbed adds it).
const (
	operatorMetricsPort = 8443
	operatorProbePort   = 8081
	operatorPprofPort   = 8082
	operatorDeployment  = "meshfed-operator"
	operatorLease       = "meshfed-operator.meshfed.io"
	xdsService          = "meshfed-xds"
	xdsPort             = 15010
)

// OperatorLeader is the operator pod that holds the leader election Lease: the one whose
// controllers run.
func (c *Cluster) OperatorLeader(ctx context.Context) (*corev1.Pod, error) {
	var lease coordinationv1.Lease
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: operatorLease}, &lease); err != nil {
		return nil, err
	}
	// The holder is "<pod name>_<uuid>".
	holder, _, _ := strings.Cut(ptr.Deref(lease.Spec.HolderIdentity, ""), "_")
	if holder == "" {
		return nil, errors.New("no operator leads")
	}
	var pod corev1.Pod
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: holder}, &pod); err != nil {
		return nil, err
	}
	if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return nil, fmt.Errorf("the leader %s has no address or is going away", holder)
	}
	return &pod, nil
}

// operatorURL is http://<leader's address>:port, "" while no operator leads.
func (c *Cluster) operatorURL(ctx context.Context, port int) string {
	pod, err := c.OperatorLeader(ctx)
	if err != nil {
		return ""
	}
	return "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port))
}

// OperatorMetricsURL is the leading operator's /metrics (HTTPS, for a token allowed to
// GET /metrics), "" while none leads.
func (c *Cluster) OperatorMetricsURL(ctx context.Context) string {
	if u := c.operatorURL(ctx, operatorMetricsPort); u != "" {
		return "https" + strings.TrimPrefix(u, "http") + "/metrics"
	}
	return ""
}

// OperatorProbeURL is the leading operator's probe server (/healthz, /readyz).
func (c *Cluster) OperatorProbeURL(ctx context.Context) string {
	return c.operatorURL(ctx, operatorProbePort)
}

// OperatorPprofURL is the leading operator's pprof server (/debug/pprof/).
func (c *Cluster) OperatorPprofURL(ctx context.Context) string {
	return c.operatorURL(ctx, operatorPprofPort)
}

// StopOperator scales the operator's Deployment to zero, as an upgrade or an outage would,
// and returns once its pods are gone: an error if one did not exit cleanly.
func (c *Cluster) StopOperator(ctx context.Context) error {
	if err := c.scaleOperator(ctx, 0); err != nil {
		return err
	}
	unclean := map[string]string{}
	err := PollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.Name+" operator pods gone", func(ctx context.Context) error {
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/component": "operator"}); err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, st := range p.Status.ContainerStatuses {
				if t := st.State.Terminated; t != nil && t.ExitCode != 0 {
					unclean[p.Name] = fmt.Sprintf("%s exited %d (%s)", p.Name, t.ExitCode, t.Reason)
				}
			}
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d operator pods", len(pods.Items))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(unclean) > 0 {
		return errors.New(strings.Join(slices.Sorted(maps.Values(unclean)), "; "))
	}
	return nil
}

// StartOperator scales the operator's Deployment back (after StopOperator) and returns
// once a replica leads.
func (c *Cluster) StartOperator(ctx context.Context) error {
	if err := c.scaleOperator(ctx, 2); err != nil {
		return err
	}
	return c.waitOperator(ctx)
}

func (c *Cluster) scaleOperator(ctx context.Context, replicas int) error {
	dep := &appsv1.Deployment{}
	dep.Namespace, dep.Name = MeshfedNamespace, operatorDeployment
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	return c.Client.Patch(ctx, dep, client.RawPatch(types.MergePatchType, patch))
}

// waitOperator waits until the operator's Deployment is available and a replica leads.
func (c *Cluster) waitOperator(ctx context.Context) error {
	return PollEvery(ctx, 2*time.Minute, 200*time.Millisecond, c.Name+" meshfed operator available and leading", func(ctx context.Context) error {
		var dep appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: operatorDeployment}, &dep); err != nil {
			return err
		}
		if dep.Status.AvailableReplicas < 1 {
			return fmt.Errorf("%d available replicas", dep.Status.AvailableReplicas)
		}
		_, err := c.OperatorLeader(ctx)
		return err
	})
}

// XDSAddress is the cluster's xDS server as workloads reach it: the meshfed-xds
// Service's ClusterIP and port.
func (c *Cluster) XDSAddress(ctx context.Context) (string, error) {
	var svc corev1.Service
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: xdsService}, &svc); err != nil {
		return "", fmt.Errorf("the xDS Service: %w", err)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(xdsPort)), nil
}

// OperatorLogs is what every operator pod of the cluster has logged, through the API
// (kubectl logs).
func (c *Cluster) OperatorLogs(ctx context.Context) (string, error) {
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/component": "operator"}); err != nil {
		return "", err
	}
	var all strings.Builder
	for _, p := range pods.Items {
		logs, err := c.Kube.CoreV1().Pods(MeshfedNamespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			return "", fmt.Errorf("logs of %s: %w", p.Name, err)
		}
		all.Write(logs)
	}
	return all.String(), nil
}

// OperatorMetric is one metric line's value (by its prefix) summed over the operator's
// replicas: every replica serves xDS (so counts its proxies' requests), the leader alone
// runs the controllers. "" when no replica has it.
func (c *Cluster) OperatorMetric(ctx context.Context, prefix string) string {
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/component": "operator"}); err != nil {
		return ""
	}
	var urls []string
	for _, p := range pods.Items {
		if p.Status.PodIP != "" {
			urls = append(urls, "https://"+net.JoinHostPort(p.Status.PodIP, strconv.Itoa(operatorMetricsPort))+"/metrics")
		}
	}
	s, err := c.metricsScraper(ctx)
	if err != nil {
		return ""
	}
	return s.sum(ctx, urls, prefix)
}

// Who scrapes the operator's metrics in the testbed, as a Prometheus would: a service
// account bound to the ClusterRole meshfed-metrics-reader of config/rbac.
const (
	scraperAccount = "meshfed-metrics-scraper"
	metricsReader  = "meshfed-metrics-reader"
)

// bindMetricsScraper makes the scraper account and binds it to the metrics reader role.
func (c *Cluster) bindMetricsScraper(ctx context.Context) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: MeshfedNamespace, Name: scraperAccount}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: scraperAccount},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: metricsReader},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: MeshfedNamespace, Name: scraperAccount}}}
	for _, obj := range []client.Object{sa, binding} {
		if err := c.Client.Create(ctx, obj); client.IgnoreAlreadyExists(err) != nil {
			return fmt.Errorf("the metrics scraper's %T: %w", obj, err)
		}
	}
	return nil
}

// metricsScraper reads the operator's metrics with a token of the scraper account (asked
// for once per cluster), over TLS that does not check the operator's self-signed
// certificate.
func (c *Cluster) metricsScraper(ctx context.Context) (scraper, error) {
	c.scrapeMu.Lock()
	defer c.scrapeMu.Unlock()
	if c.scrapeToken == "" {
		tr, err := c.Kube.CoreV1().ServiceAccounts(MeshfedNamespace).CreateToken(ctx, scraperAccount,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)}}, metav1.CreateOptions{})
		if err != nil {
			return scraper{}, err
		}
		c.scrapeToken = tr.Status.Token
	}
	return scraper{client: insecureHTTPS, token: c.scrapeToken}, nil
}

// insecureHTTPS reaches the operator's metrics, whose certificate is self-signed.
var insecureHTTPS = &http.Client{Timeout: 10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the testbed's own operator
