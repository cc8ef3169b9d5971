// Command meshfedctl is meshfed's command-line helper. `meshfedctl join` gives the hub a
// least-privilege kubeconfig for a member cluster.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/operator/internal/app"
)

func main() {
	root := &cobra.Command{Use: "meshfedctl", Short: "Helpers for running a meshfed federation", SilenceUsage: true}
	root.AddCommand(newJoinCommand())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

func newJoinCommand() *cobra.Command {
	var o struct {
		name, memberKubeconfig, memberContext, hubKubeconfig, hubContext, hubNamespace, meshNamespace, server string
		timeout                                                                                               time.Duration
	}
	cmd := &cobra.Command{
		Use:   "join --name NAME --member-kubeconfig FILE --hub-kubeconfig FILE",
		Short: "Let the hub reach a member with the least privilege it needs",
		Long: `join creates, in the member cluster, the ServiceAccount meshfed-hub in the mesh namespace
(--mesh-namespace, the member operator's --mesh-namespace) and the ClusterRole
meshfed:hub-access with exactly the rules the hub uses, then writes a kubeconfig for that
ServiceAccount, whose context names the mesh namespace, into the Secret <name>-kubeconfig in
the hub namespace. Reference it from the MeshFederation:

  members:
  - name: NAME
    kubeconfigSecretRef:
      name: NAME-kubeconfig`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			memberCfg, err := loadConfig(o.memberKubeconfig, o.memberContext)
			if err != nil {
				return fmt.Errorf("member kubeconfig: %w", err)
			}
			hubCfg, err := loadConfig(o.hubKubeconfig, o.hubContext)
			if err != nil {
				return fmt.Errorf("hub kubeconfig: %w", err)
			}
			scheme := app.NewScheme()
			member, err := client.New(memberCfg, client.Options{Scheme: scheme})
			if err != nil {
				return err
			}
			hub, err := client.New(hubCfg, client.Options{Scheme: scheme})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			secret, err := join.Join(ctx, join.Options{Name: o.name, Member: member, MemberConfig: memberCfg, Server: o.server,
				Hub: hub, HubNamespace: o.hubNamespace, Namespace: o.meshNamespace, Timeout: o.timeout})
			if err != nil {
				return err
			}
			fmt.Printf("member %s joined: the hub reads its kubeconfig from Secret %s/%s\n", o.name, secret.Namespace, secret.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "member name, as in MeshFederation.spec.members[].name (required)")
	f.StringVar(&o.memberKubeconfig, "member-kubeconfig", "", "admin kubeconfig of the member cluster (required)")
	f.StringVar(&o.memberContext, "member-context", "", "context in the member kubeconfig (default: current)")
	f.StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "kubeconfig of the hub cluster (required)")
	f.StringVar(&o.hubContext, "hub-context", "", "context in the hub kubeconfig (default: current)")
	f.StringVar(&o.hubNamespace, "hub-namespace", "meshfed-system", "namespace of the MeshFederation in the hub")
	f.StringVar(&o.meshNamespace, "mesh-namespace", meshv1.DefaultMeshNamespace, "the member's mesh namespace, as its operator's --mesh-namespace: the hub writes its intermediate CA there")
	f.StringVar(&o.server, "server", "", "member API server URL as the hub must dial it (default: the member kubeconfig's)")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "how long to wait for the member's token")
	for _, req := range []string{"name", "member-kubeconfig", "hub-kubeconfig"} {
		_ = cmd.MarkFlagRequired(req)
	}
	return cmd
}

func loadConfig(path, context string) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}
