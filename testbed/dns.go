package testbed

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// clusterDNSIP is the ClusterIP of the kube-dns Service, the nameserver of pods.
const clusterDNSIP = "10.96.0.10"

// ClusterDNSAddress is the cluster DNS's address as pods use it (reach it from the
// cluster's network: DialInCluster).
var ClusterDNSAddress = net.JoinHostPort(clusterDNSIP, "53")

// ClusterSetStanza is the server block that has the cluster DNS forward the
// clusterset.local zone, and only that zone, to meshfed-dns at address (the Mesh's
// status.dnsAddress), as docs/user-guide.md shows; 1053 is the port the testbed's CoreDNS
// listens on.
func ClusterSetStanza(address string) string {
	return fmt.Sprintf("clusterset.local:1053 {\n    errors\n    forward . %s\n}\n", net.JoinHostPort(address, "53"))
}

// ForwardClusterSet adds ClusterSetStanza(address) to the cluster DNS's Corefile (replacing
// one added before), restarts CoreDNS, which reads the Corefile at start, and waits until
// the new pod serves and the old one is gone.
func (c *Cluster) ForwardClusterSet(ctx context.Context, address string) error {
	var cm corev1.ConfigMap
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &cm); err != nil {
		return err
	}
	base, _, _ := strings.Cut(cm.Data["Corefile"], "clusterset.local:")
	cm.Data["Corefile"] = base + ClusterSetStanza(address)
	if err := c.Client.Update(ctx, &cm); err != nil {
		return err
	}
	var dep appsv1.Deployment
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &dep); err != nil {
		return err
	}
	patch := client.MergeFrom(dep.DeepCopy())
	if dep.Spec.Template.Annotations == nil {
		dep.Spec.Template.Annotations = map[string]string{}
	}
	dep.Spec.Template.Annotations["testbed.meshfed.io/corefile"] = address
	if err := c.Client.Patch(ctx, &dep, patch); err != nil {
		return err
	}
	return PollEvery(ctx, 90*time.Second, 100*time.Millisecond, c.Name+" cluster DNS restarted", func(ctx context.Context) error {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &dep); err != nil {
			return err
		}
		st := dep.Status
		if st.ObservedGeneration < dep.Generation || st.UpdatedReplicas != st.Replicas || st.AvailableReplicas != st.Replicas || st.Replicas != *dep.Spec.Replicas {
			return fmt.Errorf("%d replicas, %d updated, %d available", st.Replicas, st.UpdatedReplicas, st.AvailableReplicas)
		}
		return nil
	})
}

// DialInCluster connects from inside the cluster's network, where pods' traffic to Service
// IPs is forwarded (kube-proxy runs there): a test reaches the cluster DNS the way a pod
// does. It needs the pods of Options.Pods (root).
func (c *Cluster) DialInCluster(ctx context.Context, network, address string) (net.Conn, error) {
	if c.network == nil {
		return nil, ErrNeedsRoot
	}
	var conn net.Conn
	err := inNetns(c.network.netns, func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

//go:embed addons/coredns.yaml
var corednsManifest string

// startDNS runs the cluster DNS: CoreDNS from its image, as a Deployment, and waits until
// it is available.
func (c *Cluster) startDNS(ctx context.Context) error {
	c.tb.progress("%s: starting the cluster DNS", c.Name)
	bin, err := os.ReadFile(c.tb.bin("coredns"))
	if err != nil {
		return err
	}
	ref, err := c.tb.imageOf(ctx, "coredns", bin)
	if err != nil {
		return err
	}
	if err := c.Kubectl(ctx, strings.NewReader(strings.ReplaceAll(corednsManifest, "image: IMAGE", "image: "+ref)), "apply", "-f", "-"); err != nil {
		return err
	}
	return PollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.Name+" cluster DNS available", func(ctx context.Context) error {
		var dep appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &dep); err != nil {
			return err
		}
		if dep.Status.AvailableReplicas < 1 {
			return fmt.Errorf("%d available replicas", dep.Status.AvailableReplicas)
		}
		return nil
	})
}

// Kubectl runs bin/kubectl with the cluster's admin kubeconfig, stdin as its input.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, c.tb.bin("kubectl"), append([]string{"--kubeconfig=" + c.KubeconfigPath}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}
