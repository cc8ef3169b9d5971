package testbed

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// clusterDNSIP is the ClusterIP of the kube-dns Service, the nameserver of pods.
const clusterDNSIP = "10.96.0.10"

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
	return pollEvery(ctx, 60*time.Second, 100*time.Millisecond, c.Name+" cluster DNS available", func(ctx context.Context) error {
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
