// Command testbed starts local meshfed clusters (see package testbed): `testbed up` keeps
// them up until Ctrl-C, `testbed run` runs a command against them (`make kuttl`), and
// `testbed demo` federates them and shows meshfed at work (`make demo`).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/testbed"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "testbed",
		Short:         "Run local Kubernetes clusters with meshfed, without containers",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(newUpCommand(), newRunCommand(), newDemoCommand())
	return root
}

// newRunCommand starts clusters, runs one command against them and stops them: `make
// kuttl` runs the kuttl scenarios this way. The command gets, for every cluster i (from
// 1), MESHFED_KUBECONFIG_<i> and MESHFED_CLUSTER_<i> (its name); KUBECONFIG is cluster 1's.
func newRunCommand() *cobra.Command {
	var clusters int
	cmd := &cobra.Command{
		Use:   "run [--clusters N] -- COMMAND [ARGS...]",
		Short: "Start clusters, run a command against them, stop them; exit with the command's status",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			dir, err := os.MkdirTemp("", "meshfed-testbed-run-")
			if err != nil {
				return err
			}
			tb, err := testbed.Start(ctx, testbed.Options{Clusters: clusters, Dir: dir, Operator: true, Progress: os.Stdout})
			if errors.Is(err, testbed.ErrNeedsRoot) {
				// make test goes on without what needs meshfed's pods.
				fmt.Fprintf(os.Stderr, "testbed run: %s skipped: %v\n", args[0], err)
				return os.RemoveAll(dir)
			}
			if err != nil {
				return err
			}
			env := os.Environ()
			for i, c := range tb.Clusters {
				env = append(env, fmt.Sprintf("MESHFED_KUBECONFIG_%d=%s", i+1, c.KubeconfigPath), fmt.Sprintf("MESHFED_CLUSTER_%d=%s", i+1, c.Name))
			}
			env = append(env, "KUBECONFIG="+tb.Clusters[0].KubeconfigPath)
			run := exec.CommandContext(ctx, args[0], args[1:]...)
			run.Env, run.Stdin, run.Stdout, run.Stderr = env, os.Stdin, os.Stdout, os.Stderr
			runErr := run.Run()
			tb.Stop()
			if runErr != nil {
				fmt.Fprintf(os.Stderr, "%s failed: %v; logs of every process stay in %s\n", args[0], runErr, dir)
				return runErr
			}
			return os.RemoveAll(dir)
		},
	}
	cmd.Flags().IntVar(&clusters, "clusters", 3, "number of clusters")
	return cmd
}

func newUpCommand() *cobra.Command {
	var (
		clusters int
		dir      string
		duration time.Duration
		operator bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start clusters, print how to reach them, and stop them on Ctrl-C",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dir == "" {
				root, err := testbed.RepoRoot()
				if err != nil {
					return err
				}
				dir = filepath.Join(root, ".testbed")
			}
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			start := time.Now()
			tb, err := testbed.Start(ctx, testbed.Options{Clusters: clusters, Dir: dir, Operator: operator, Progress: os.Stdout})
			if err != nil {
				return err
			}
			defer func() {
				fmt.Println("stopping the clusters…")
				tb.Stop()
				fmt.Println("stopped; logs and kubeconfigs stay in", dir)
			}()
			printWelcome(tb, fmt.Sprintf("%d clusters ready in %s.", len(tb.Clusters), time.Since(start).Round(100*time.Millisecond)))
			if duration > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(duration):
				}
				return nil
			}
			fmt.Println("Press Ctrl-C to stop.")
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().IntVar(&clusters, "clusters", 3, "number of clusters")
	cmd.Flags().StringVar(&dir, "dir", "", "state directory (default <repo>/.testbed; emptied first)")
	cmd.Flags().DurationVar(&duration, "for", 0, "stop by itself after this long (0: wait for Ctrl-C)")
	cmd.Flags().BoolVar(&operator, "operator", true, "run the meshfed operator in every cluster")
	return cmd
}

func printWelcome(tb *testbed.Testbed, headline string) {
	fmt.Printf("\n%s\n\n", headline)
	fmt.Printf("%-10s %-34s %s\n", "CLUSTER", "API SERVER", "KUBECONFIG")
	for _, c := range tb.Clusters {
		fmt.Printf("%-10s %-34s %s\n", c.Name, c.Server, c.KubeconfigPath)
	}
	first := tb.Clusters[0]
	kubectl := "kubectl"
	if root, err := testbed.RepoRoot(); err == nil {
		kubectl = filepath.Join(testbed.BinDir(root), "kubectl")
	}
	fmt.Printf("\nTry:\n")
	fmt.Printf("  export KUBECONFIG=%s\n", first.KubeconfigPath)
	fmt.Printf("  %s get nodes,namespaces\n", kubectl)
	fmt.Printf("  %s get crds | grep -e meshfed -e multicluster -e cert-manager\n", kubectl)
	fmt.Printf("  %s get mesh,meshfederation,meshpeers,serviceexports,serviceimports -A\n", kubectl)
	fmt.Printf("  %s --kubeconfig %s get namespaces\n", kubectl, tb.Clusters[len(tb.Clusters)-1].KubeconfigPath)
	fmt.Printf("  %s -n %s get pods -o wide\n", kubectl, testbed.MeshfedNamespace)
	fmt.Printf("  %s -n %s logs deploy/meshfed-operator\n", kubectl, testbed.MeshfedNamespace)
	if u := first.OperatorMetricsURL(context.Background()); u != "" {
		fmt.Printf("  curl -sk -H \"Authorization: Bearer $(%s -n %s create token <account bound to meshfed-metrics-reader>)\" %s | grep meshfed_\n",
			kubectl, testbed.MeshfedNamespace, u)
	}
	fmt.Printf("Logs of every process: %s/<cluster>/*.log (pods: kubectl logs)\n\n", tb.Dir)
}
