package testbed

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/internal/imagebuild"
)

// Pod address plan of a cluster with octet o, next to the one in network.go:
//
//	198.18.o.128/25  pods of the node agent, each in a network namespace of its own
//	198.19.o.1       the node's InternalIP: its API (kubectl logs) listens there
const podCIDRFormat = "198.18.%d.128/25"

// NodeName is the name of the cluster's node that runs pods from images.
func (c *Cluster) NodeName() string { return c.Name + "-worker" }

// podCredentials are the scheduler's and the node's identities.
type podCredentials struct {
	schedulerKubeconfig, nodeKubeconfig, proxyKubeconfig string
	nodeCert, nodeKey                                    string
}

// writePodCredentials writes the kube-scheduler's kubeconfig and the node's kubeconfig
// and serving certificate. The node's identity is system:node:<name> (group system:nodes);
// it is also in system:masters because virtual-kubelet watches every Secret and ConfigMap,
// which the Node authorizer would not allow.
func (c *Cluster) writePodCredentials(ca *pki) (podCredentials, error) {
	creds := podCredentials{
		schedulerKubeconfig: filepath.Join(c.Dir, "kube-scheduler.kubeconfig"),
		nodeKubeconfig:      filepath.Join(c.Dir, "node.kubeconfig"),
		proxyKubeconfig:     filepath.Join(c.Dir, "kube-proxy.kubeconfig"),
		nodeCert:            filepath.Join(c.Dir, "node.crt"),
		nodeKey:             filepath.Join(c.Dir, "node.key"),
	}
	schedCert, schedKey, err := ca.issue("system:kube-scheduler", nil, nil, nil)
	if err != nil {
		return creds, err
	}
	if err := writeKubeconfig(creds.schedulerKubeconfig, c.Name, c.Server, ca.certPEM(), schedCert, schedKey); err != nil {
		return creds, err
	}
	proxyCert, proxyKey, err := ca.issue("system:kube-proxy", nil, nil, nil)
	if err != nil {
		return creds, err
	}
	if err := writeKubeconfig(creds.proxyKubeconfig, c.Name, c.Server, ca.certPEM(), proxyCert, proxyKey); err != nil {
		return creds, err
	}
	nodeCert, nodeKey, err := ca.issue("system:node:"+c.NodeName(), []string{"system:nodes", "system:masters"}, nil, nil)
	if err != nil {
		return creds, err
	}
	if err := writeKubeconfig(creds.nodeKubeconfig, c.Name, c.Server, ca.certPEM(), nodeCert, nodeKey); err != nil {
		return creds, err
	}
	servingCert, servingKey, err := ca.issue(c.NodeName(), nil, []net.IP{net.ParseIP(nodeIP(c.Octet))}, []string{c.NodeName()})
	if err != nil {
		return creds, err
	}
	return creds, writeFiles(map[string][]byte{creds.nodeCert: servingCert, creds.nodeKey: servingKey})
}

// nodeIP is the node agent's address: the host end of the cluster's pod network.
func nodeIP(o int) string { return fmt.Sprintf("198.19.%d.1", o) }

// startPods starts the kube-scheduler, the node agent and kube-proxy, and waits until the
// node is Ready.
func (c *Cluster) startPods(ctx context.Context, creds podCredentials, caPath string) error {
	c.tb.progress("%s: starting kube-scheduler and the node %s", c.Name, c.NodeName())
	var err error
	c.scheduler, err = c.tb.start(c.Name+"/kube-scheduler", filepath.Join(c.Dir, "kube-scheduler.log"), []string{
		c.tb.bin("kube-scheduler"),
		"--kubeconfig=" + creds.schedulerKubeconfig,
		"--authentication-kubeconfig=" + creds.schedulerKubeconfig,
		"--authorization-kubeconfig=" + creds.schedulerKubeconfig,
		"--leader-elect=false",
		"--bind-address=" + apiServerIP(c.Octet),
		"--secure-port=0",
	})
	if err != nil {
		return err
	}
	port, err := FreePort(nodeIP(c.Octet))
	if err != nil {
		return err
	}
	c.node, err = c.tb.start(c.Name+"/node", filepath.Join(c.Dir, "node.log"), []string{
		c.tb.built["node"],
		"--kubeconfig=" + creds.nodeKubeconfig,
		"--node-name=" + c.NodeName(),
		"--node-ip=" + nodeIP(c.Octet),
		"--port=" + strconv.Itoa(port),
		"--tls-cert=" + creds.nodeCert,
		"--tls-key=" + creds.nodeKey,
		"--client-ca=" + caPath,
		"--dir=" + filepath.Join(c.Dir, "node"),
		"--cluster-netns=" + c.network.netns,
		"--gateway=" + c.network.nsIP(),
		"--pod-cidr=" + fmt.Sprintf(podCIDRFormat, c.Octet),
		"--insecure-registries=" + c.tb.Registry,
		"--cluster-dns=" + clusterDNSIP,
		// Tests watch a crash loop and a token renewal within seconds.
		"--crash-back-off=" + c.tb.opts.CrashBackOff.String(),
		"--token-renew-after=" + c.tb.opts.TokenRenewAfter.String(),
	})
	if err != nil {
		return err
	}
	err = PollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.NodeName()+" Ready", func(ctx context.Context) error {
		if c.node.exited() {
			return c.node.exitError()
		}
		var node corev1.Node
		if err := c.Client.Get(ctx, client.ObjectKey{Name: c.NodeName()}, &node); err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready", c.NodeName())
	})
	if err != nil {
		return err
	}
	// kube-proxy runs in the cluster's network namespace, which every pod routes
	// through: its rules serve this cluster's pods and no one else.
	c.proxy, err = c.tb.start(c.Name+"/kube-proxy", filepath.Join(c.Dir, "kube-proxy.log"), []string{
		"ip", "netns", "exec", c.network.netns,
		c.tb.bin("kube-proxy"),
		"--kubeconfig=" + creds.proxyKubeconfig,
		"--proxy-mode=nftables",
		"--hostname-override=" + c.NodeName(),
		"--cluster-cidr=" + fmt.Sprintf("198.18.%d.0/24", c.Octet),
		// The namespace's conntrack table is the kernel's; kube-proxy leaves its size.
		"--conntrack-max-per-core=0",
	})
	if err != nil {
		return err
	}
	return c.startDNS(ctx)
}

// CanRunPods reports whether the testbed's clusters run pods from images (Options.Pods,
// as root).
func CanRunPods(tb *Testbed) bool {
	return len(tb.Clusters) > 0 && tb.Clusters[0].node != nil
}

// Image builds the project command pkg into an image named imageName, as `make images`
// does (imagebuild), pushes it to the testbed's registry once, and returns its reference
// by digest.
func (tb *Testbed) Image(ctx context.Context, imageName, pkg string) (string, error) {
	tb.buildMu.Lock()
	ref := tb.images[imageName]
	tb.buildMu.Unlock()
	if ref != "" {
		return ref, nil
	}
	img, err := imagebuild.Build(ctx, tb.imageOptions(), imagebuild.Image{Name: imageName, Package: pkg})
	if err != nil {
		return "", err
	}
	return tb.push(ctx, imageName, img)
}

// imageOf makes an image around bin, a static binary, and pushes it once.
func (tb *Testbed) imageOf(ctx context.Context, imageName string, bin []byte) (string, error) {
	tb.buildMu.Lock()
	ref := tb.images[imageName]
	tb.buildMu.Unlock()
	if ref != "" {
		return ref, nil
	}
	img, err := imagebuild.Assemble(tb.imageOptions(), imageName, bin)
	if err != nil {
		return "", err
	}
	return tb.push(ctx, imageName, img)
}

func (tb *Testbed) imageOptions() imagebuild.Options {
	return imagebuild.Options{RepoRoot: tb.repoRoot, Version: "testbed", Revision: "testbed", Source: "meshfed testbed",
		Created: time.Unix(0, 0).UTC(), WorkDir: filepath.Join(tb.Dir, "bin")}
}

// push writes img to the registry by digest and returns the reference.
func (tb *Testbed) push(ctx context.Context, imageName string, img v1.Image) (string, error) {
	if tb.Registry == "" {
		return "", fmt.Errorf("image %s: the testbed runs no registry (Options.Registry)", imageName)
	}
	repo, err := name.NewRepository(tb.Registry+"/"+imageName, name.Insecure)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	ref := repo.Digest(digest.String())
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	tb.buildMu.Lock()
	defer tb.buildMu.Unlock()
	if tb.images == nil {
		tb.images = map[string]string{}
	}
	tb.images[imageName] = ref.String()
	return ref.String(), nil
}

// PodPIDs lists the container processes the clusters' nodes run now (the node's
// children).
func (tb *Testbed) PodPIDs() []int {
	var out []int
	for _, c := range tb.Clusters {
		if c.node != nil && !c.node.exited() {
			out = append(out, ChildPIDs(c.node.pid())...)
		}
	}
	return out
}
