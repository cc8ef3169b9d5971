// Command meshfedctl is meshfed's command-line helper. `meshfedctl join` gives the hub a
// least-privilege kubeconfig for a member cluster, `meshfedctl unjoin` takes it back.
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
	root.AddCommand(newJoinCommand(), newUnjoinCommand())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

func newJoinCommand() *cobra.Command {
	var o struct {
		clusters
		server   string
		tokenTTL time.Duration
	}
	cmd := &cobra.Command{
		Use:   "join --name NAME --member-kubeconfig FILE --hub-kubeconfig FILE",
		Short: "Let the hub reach a member with the least privilege it needs",
		Long: `join creates, in the member cluster, the ServiceAccount meshfed-hub in the mesh namespace
(--mesh-namespace, the member operator's --mesh-namespace), the ClusterRole
meshfed:hub-access with exactly the rules the hub uses and the ValidatingAdmissionPolicy
meshfed-hub-writes that keeps the hub's writes to meshfed's own objects, then writes a
kubeconfig with a token of that ServiceAccount (valid --token-ttl; the hub renews it before
it ends), whose context names the mesh namespace, into the Secret <name>-kubeconfig in the
hub namespace. Run it again to refresh that token. Reference the Secret from the
MeshFederation:

  members:
  - name: NAME
    kubeconfigSecretRef:
      name: NAME-kubeconfig`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			memberCfg, member, hub, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			secret, err := join.Join(ctx, join.Options{Name: o.name, Member: member, MemberConfig: memberCfg, Server: o.server,
				Hub: hub, HubNamespace: o.hubNamespace, Namespace: o.meshNamespace, TokenTTL: o.tokenTTL, Timeout: o.timeout})
			if err != nil {
				return err
			}
			fmt.Printf("member %s joined: the hub reads its kubeconfig from Secret %s/%s\n", o.name, secret.Namespace, secret.Name)
			return nil
		},
	}
	o.bind(cmd, "kubeconfig of the hub cluster (required)",
		"the member's mesh namespace, as its operator's --mesh-namespace: the hub writes its intermediate CA there", "how long to wait for the member")
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "member API server URL as the hub must dial it (default: the member kubeconfig's)")
	f.DurationVar(&o.tokenTTL, "token-ttl", join.DefaultTokenTTL, fmt.Sprintf("life of the hub's token, at most %s; the hub renews it before it ends", join.MaxTokenTTL))
	_ = cmd.MarkFlagRequired("hub-kubeconfig")
	return cmd
}

func newUnjoinCommand() *cobra.Command {
	var o clusters
	cmd := &cobra.Command{
		Use:   "unjoin --name NAME --member-kubeconfig FILE [--hub-kubeconfig FILE]",
		Short: "Take the hub's access to a member away and remove what the hub wrote there",
		Long: `unjoin deletes, in the member cluster, the hub's bindings, its ServiceAccount meshfed-hub
(every token the hub holds stops working at once), the ClusterRole meshfed:hub-access and the
admission policy meshfed-hub-writes, then every ServiceImport, EndpointSlice and MeshPeer the
hub wrote (those labelled meshfed.io/federation) and the ConfigMap meshfed-intermediate. The
member's own objects stay. With --hub-kubeconfig it also deletes the Secret <name>-kubeconfig
in the hub and names the MeshFederations that still list the member.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, member, hub, err := o.connect()
			if err != nil {
				return err
			}
			uo := join.UnjoinOptions{Name: o.name, Member: member, Namespace: o.meshNamespace, Hub: hub, HubNamespace: o.hubNamespace}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			res, err := join.Unjoin(ctx, uo)
			if err != nil {
				return err
			}
			fmt.Printf("member %s unjoined: the hub's access is gone; removed %d ServiceImports, %d EndpointSlices, %d MeshPeers, %d ConfigMaps the hub wrote\n",
				o.name, res.Removed["ServiceImport"], res.Removed["EndpointSlice"], res.Removed["MeshPeer"], res.Removed["ConfigMap"])
			for _, f := range res.StillListedBy {
				fmt.Printf("MeshFederation %s/%s still lists member %s: remove it from spec.members\n", o.hubNamespace, f, o.name)
			}
			return nil
		},
	}
	o.bind(cmd, "kubeconfig of the hub cluster: also delete the member's kubeconfig Secret there",
		"the member's mesh namespace, as given to join", "how long unjoin may take")
	return cmd
}

// clusters are the flags join and unjoin share: which member, and how to reach it and the hub.
type clusters struct {
	name, memberKubeconfig, memberContext, hubKubeconfig, hubContext, hubNamespace, meshNamespace string
	timeout                                                                                       time.Duration
}

func (c *clusters) bind(cmd *cobra.Command, hubKubeconfigHelp, meshNamespaceHelp, timeoutHelp string) {
	f := cmd.Flags()
	f.StringVar(&c.name, "name", "", "member name, as in MeshFederation.spec.members[].name (required)")
	f.StringVar(&c.memberKubeconfig, "member-kubeconfig", "", "admin kubeconfig of the member cluster (required)")
	f.StringVar(&c.memberContext, "member-context", "", "context in the member kubeconfig (default: current)")
	f.StringVar(&c.hubKubeconfig, "hub-kubeconfig", "", hubKubeconfigHelp)
	f.StringVar(&c.hubContext, "hub-context", "", "context in the hub kubeconfig (default: current)")
	f.StringVar(&c.hubNamespace, "hub-namespace", "meshfed-system", "namespace of the MeshFederation in the hub")
	f.StringVar(&c.meshNamespace, "mesh-namespace", meshv1.DefaultMeshNamespace, meshNamespaceHelp)
	f.DurationVar(&c.timeout, "timeout", time.Minute, timeoutHelp)
	for _, req := range []string{"name", "member-kubeconfig"} {
		_ = cmd.MarkFlagRequired(req)
	}
}

// connect builds clients of the member and, when --hub-kubeconfig is given, of the hub.
func (c *clusters) connect() (memberCfg *rest.Config, member, hub client.Client, err error) {
	if memberCfg, err = loadConfig(c.memberKubeconfig, c.memberContext); err != nil {
		return nil, nil, nil, fmt.Errorf("member kubeconfig: %w", err)
	}
	scheme := app.NewScheme()
	if member, err = client.New(memberCfg, client.Options{Scheme: scheme}); err != nil {
		return nil, nil, nil, err
	}
	if c.hubKubeconfig == "" {
		return memberCfg, member, nil, nil
	}
	hubCfg, err := loadConfig(c.hubKubeconfig, c.hubContext)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hub kubeconfig: %w", err)
	}
	if hub, err = client.New(hubCfg, client.Options{Scheme: scheme}); err != nil {
		return nil, nil, nil, err
	}
	return memberCfg, member, hub, nil
}

func loadConfig(path, context string) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}
