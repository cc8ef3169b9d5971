// Command node is the testbed's node agent: a virtual-kubelet node whose provider runs
// pods as processes from their images (see package podnode). Run as root: pods get
// network and mount namespaces. With the argument "container-init" it is instead the init
// of one container, started by the node itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meshfed/meshfed/testbed/podnode"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == podnode.InitCommand {
		podnode.RunInit(os.Args[2])
		return
	}
	var cfg podnode.Config
	var insecure string
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the node's identity")
	flag.StringVar(&cfg.NodeName, "node-name", "", "name of the Node object")
	flag.StringVar(&cfg.NodeIP, "node-ip", "", "the node's InternalIP, where its API listens")
	flag.IntVar(&cfg.Port, "port", 10250, "port of the node API")
	flag.StringVar(&cfg.TLSCert, "tls-cert", "", "serving certificate of the node API")
	flag.StringVar(&cfg.TLSKey, "tls-key", "", "key of the serving certificate")
	flag.StringVar(&cfg.ClientCA, "client-ca", "", "CA of the API server's client certificate")
	flag.StringVar(&cfg.Dir, "dir", "", "state directory: images, pods, logs")
	flag.StringVar(&cfg.ClusterNetns, "cluster-netns", "", "network namespace of the cluster's pod network")
	flag.StringVar(&cfg.Gateway, "gateway", "", "address of the cluster network namespace, the pods' default route")
	flag.StringVar(&cfg.PodCIDR, "pod-cidr", "", "range of pod addresses")
	flag.StringVar(&cfg.ClusterDNS, "cluster-dns", "", "nameserver of pods' resolv.conf")
	flag.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	flag.StringVar(&insecure, "insecure-registries", "", "comma-separated registries (host:port) spoken to over plain HTTP")
	flag.DurationVar(&cfg.CrashBackOff, "crash-back-off", podnode.DefaultCrashBackOff, "first delay before a failed container restarts")
	flag.DurationVar(&cfg.TokenRenewAfter, "token-renew-after", 0, "renew projected tokens this long after issue (0: at 80% of their lifetime)")
	flag.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "lowest level logged: DEBUG, INFO, WARN or ERROR")
	flag.Parse()
	if insecure != "" {
		cfg.InsecureRegistries = strings.Split(insecure, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := podnode.Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		os.Exit(1)
	}
}
