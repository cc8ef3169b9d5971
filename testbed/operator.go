package testbed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The operator's ports, as config/manager sets them (pprof as the testbed adds it).
const (
	operatorMetricsPort = 8080
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

// OperatorMetricsURL is the leading operator's /metrics, "" while none leads.
func (c *Cluster) OperatorMetricsURL(ctx context.Context) string {
	if u := c.operatorURL(ctx, operatorMetricsPort); u != "" {
		return u + "/metrics"
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
	err := pollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.Name+" operator pods gone", func(ctx context.Context) error {
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
	return pollEvery(ctx, 2*time.Minute, 200*time.Millisecond, c.Name+" meshfed operator available and leading", func(ctx context.Context) error {
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
			urls = append(urls, "http://"+net.JoinHostPort(p.Status.PodIP, strconv.Itoa(operatorMetricsPort))+"/metrics")
		}
	}
	return MetricSum(ctx, urls, prefix)
}
