// Command cert-manager-controller runs cert-manager's certificate and issuer controllers,
// and its cainjector, against one API server. It is the testbed's stand-in for the
// cert-manager Deployments: same controllers, same CRDs, no webhook and no
// ACME/Vault/Venafi issuers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Controllers register themselves with controller.Known() when imported.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// Issuer types the issuers controllers can check.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	var opts controller.ContextOptions
	// A flag set of its own: controller-runtime (the cainjector's) registers --kubeconfig
	// on the global one.
	flags := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	flags.StringVar(&opts.Kubeconfig, "kubeconfig", "", "path to the kubeconfig of the API server to serve")
	flags.StringVar(&opts.ClusterResourceNamespace, "cluster-resource-namespace", "cert-manager",
		"namespace that holds the Secrets of ClusterIssuers")
	workers := flags.Int("workers", 5, "workers per controller")
	klog.InitFlags(flags)
	_ = flags.Parse(os.Args[1:])
	opts.KubernetesAPIQPS = 50
	opts.KubernetesAPIBurst = 100

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, opts controller.ContextOptions, workers int) error {
	ctx = logf.NewContext(ctx, klog.Background(), "cert-manager-controller")
	factory, err := controller.NewContextFactory(ctx, opts)
	if err != nil {
		return err
	}
	known := controller.Known()
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	sort.Strings(names)
	controllers := make([]controller.Interface, 0, len(names))
	for _, name := range names {
		c, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("build controller %s: %w", name, err)
		}
		controllers = append(controllers, c)
	}

	// Every Context built by the factory shares the factory's informer factories.
	shared, err := factory.Build()
	if err != nil {
		return err
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	if shared.GatewaySolverEnabled {
		shared.GWShared.Start(ctx.Done())
	}
	klog.InfoS("running controllers", "controllers", strings.Join(slices.Clip(names), ","))

	var wg sync.WaitGroup
	errs := make(chan error, len(controllers)+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := runCAInjector(ctx, opts.Kubeconfig); err != nil {
			errs <- err
		}
	}()
	for i, c := range controllers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %s: %w", names[i], err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
