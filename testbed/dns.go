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

	"github.com/miekg/dns"
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
	err := PollEvery(ctx, 90*time.Second, 100*time.Millisecond, c.Name+" cluster DNS restarted", func(ctx context.Context) error {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &dep); err != nil {
			return err
		}
		st := dep.Status
		if st.ObservedGeneration < dep.Generation || st.UpdatedReplicas != st.Replicas || st.AvailableReplicas != st.Replicas || st.Replicas != *dep.Spec.Replicas {
			return fmt.Errorf("%d replicas, %d updated, %d available", st.Replicas, st.UpdatedReplicas, st.AvailableReplicas)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// kube-proxy moves the Service to the new pod a moment after it is available: done once
	// the zone's SOA comes back through the Service, as pods ask.
	return PollEvery(ctx, 30*time.Second, 50*time.Millisecond, c.Name+" cluster DNS forwarding clusterset.local", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		resp, err := c.AskDNS(ctx, ClusterDNSAddress, "clusterset.local.", dns.TypeSOA)
		if err != nil {
			return err
		}
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
			return fmt.Errorf("SOA clusterset.local: %s %v", dns.RcodeToString[resp.Rcode], resp.Answer)
		}
		return nil
	})
}

// Resolve asks the cluster DNS one question, from inside the cluster's network as a pod
// does.
func (c *Cluster) Resolve(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	return c.AskDNS(ctx, ClusterDNSAddress, name, qtype)
}

// AskDNS asks the DNS server at address one question over UDP, from inside the cluster's
// network, waiting at most 2 s (less if ctx ends sooner).
func (c *Cluster) AskDNS(ctx context.Context, address, name string, qtype uint16) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := c.DialInCluster(ctx, "udp", address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	resp, _, err := (&dns.Client{}).ExchangeWithConnContext(ctx, req, &dns.Conn{Conn: conn})
	if err != nil {
		return nil, fmt.Errorf("%s %s at %s in %s: %w", dns.TypeToString[qtype], name, address, c.Name, err)
	}
	return resp, nil
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
