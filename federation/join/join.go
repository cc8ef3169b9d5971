// Package join connects a member cluster to a hub with the least privilege the hub needs:
// it creates, in the member, a ServiceAccount bound to a ClusterRole holding exactly the
// rules the hub uses, waits for the ServiceAccount's token, and stores a kubeconfig built
// from it in a Secret next to the hub's MeshFederation. `meshfedctl join` calls it.
package join

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Names of what Join creates in the member.
const (
	// MemberNamespace is the mesh namespace Join uses unless told another.
	MemberNamespace = meshv1.DefaultMeshNamespace
	ServiceAccount  = "meshfed-hub"
	ClusterRoleName = "meshfed:hub-access"
	tokenSecretName = "meshfed-hub-token"
)

// HubRules are everything the hub does in a member, and nothing more.
func HubRules() []rbacv1.PolicyRule {
	read := []string{"get", "list", "watch"}
	write := []string{"get", "list", "watch", "create", "patch", "delete"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: read},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: write},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports"}, Verbs: read},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports"}, Verbs: write},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{meshv1.GroupVersion.Group}, Resources: []string{"meshes"}, Verbs: read},
		{APIGroups: []string{meshv1.GroupVersion.Group}, Resources: []string{"meshpeers"}, Verbs: write},
		// update: a new MeshPeer's status is written with the resourceVersion its create returned.
		{APIGroups: []string{meshv1.GroupVersion.Group}, Resources: []string{"meshpeers/status"}, Verbs: []string{"update", "patch"}},
	}
}

// TrustRules are what the hub does in the member's namespace: it writes the member's signed
// intermediate, public material only, into one ConfigMap (create cannot be limited to a
// name in RBAC). The hub holds no verb on Secrets: the member keeps its CA key.
func TrustRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{trust.IntermediateConfigMap},
			Verbs: []string{"get", "update", "patch", "delete"}},
	}
}

// Options say which member joins which hub.
type Options struct {
	// Name of the member in the MeshFederation.
	Name string
	// Member is an admin connection to the member cluster.
	Member       client.Client
	MemberConfig *rest.Config
	// Server is the member API server URL the hub should use (default: MemberConfig.Host).
	Server string
	// Hub is a connection to the hub cluster; the Secret goes to HubNamespace.
	Hub          client.Client
	HubNamespace string
	// Namespace is the member's mesh namespace (default MemberNamespace), where the hub
	// gets its token and may write meshfed-cacerts; the member operator's --mesh-namespace
	// must name the same. The kubeconfig Join writes carries it, so the hub reads it there.
	Namespace string
	// Timeout bounds the wait for the token (default 30s).
	Timeout time.Duration
}

// SecretName is the name of the kubeconfig Secret Join writes for member name.
func SecretName(name string) string { return name + "-kubeconfig" }

// Join sets up the member's ServiceAccount and RBAC and writes the hub's kubeconfig Secret.
// It is idempotent: run it again to refresh the Secret.
func Join(ctx context.Context, o Options) (*corev1.Secret, error) {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	ns := o.Namespace
	if ns == "" {
		ns = MemberNamespace
	}
	labels := map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ServiceAccount, Labels: labels}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName, Labels: labels}, Rules: HubRules()},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ClusterRoleName},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: ServiceAccount}},
		},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ClusterRoleName, Labels: labels}, Rules: TrustRules()},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ClusterRoleName, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ClusterRoleName},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: ServiceAccount}},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tokenSecretName, Labels: labels,
				Annotations: map[string]string{corev1.ServiceAccountNameKey: ServiceAccount}},
			Type: corev1.SecretTypeServiceAccountToken,
		},
	}
	for _, obj := range objs {
		if err := apply(ctx, o.Member, obj); err != nil {
			return nil, fmt.Errorf("member %s: %T %s: %w", o.Name, obj, obj.GetName(), err)
		}
	}
	// The member's token controller fills the Secret with a token and the cluster's CA.
	var token corev1.Secret
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, o.Timeout, true, func(ctx context.Context) (bool, error) {
		if err := o.Member.Get(ctx, client.ObjectKey{Namespace: ns, Name: tokenSecretName}, &token); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return len(token.Data[corev1.ServiceAccountTokenKey]) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("member %s: no token in Secret %s/%s after %s (is kube-controller-manager running with --service-account-private-key-file?): %w",
			o.Name, ns, tokenSecretName, o.Timeout, err)
	}
	kubeconfig, err := Kubeconfig(o.Name, serverOf(o), caOf(o.MemberConfig, token.Data[corev1.ServiceAccountRootCAKey]), string(token.Data[corev1.ServiceAccountTokenKey]), ns)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.HubNamespace, Name: SecretName(o.Name), Labels: labels},
		Data:       map[string][]byte{"kubeconfig": kubeconfig},
	}
	if err := apply(ctx, o.Hub, secret); err != nil {
		return nil, fmt.Errorf("hub: Secret %s/%s: %w", o.HubNamespace, secret.Name, err)
	}
	return secret, nil
}

func serverOf(o Options) string {
	if o.Server != "" {
		return o.Server
	}
	return o.MemberConfig.Host
}

// caOf prefers the CA the admin connection trusts (it verified the server the hub will
// dial) over the token's root CA.
func caOf(cfg *rest.Config, tokenCA []byte) []byte {
	if len(cfg.CAData) > 0 {
		return cfg.CAData
	}
	return tokenCA
}

// Kubeconfig builds a token kubeconfig for one member whose mesh namespace is namespace.
func Kubeconfig(name, server string, ca []byte, token, namespace string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: namespace}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}

// apply creates obj or brings the existing object's data, rules and bindings in line.
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	desired := obj.DeepCopyObject().(client.Object)
	_, err := controllerutil.CreateOrUpdate(ctx, c, obj, func() error {
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			o.Rules = desired.(*rbacv1.ClusterRole).Rules
		case *rbacv1.ClusterRoleBinding:
			if o.RoleRef.Name != "" && o.RoleRef != desired.(*rbacv1.ClusterRoleBinding).RoleRef {
				return fmt.Errorf("ClusterRoleBinding %s points at another role; delete it and join again", o.Name)
			}
			o.RoleRef, o.Subjects = desired.(*rbacv1.ClusterRoleBinding).RoleRef, desired.(*rbacv1.ClusterRoleBinding).Subjects
		case *rbacv1.Role:
			o.Rules = desired.(*rbacv1.Role).Rules
		case *rbacv1.RoleBinding:
			if o.RoleRef.Name != "" && o.RoleRef != desired.(*rbacv1.RoleBinding).RoleRef {
				return fmt.Errorf("RoleBinding %s points at another role; delete it and join again", o.Name)
			}
			o.RoleRef, o.Subjects = desired.(*rbacv1.RoleBinding).RoleRef, desired.(*rbacv1.RoleBinding).Subjects
		case *corev1.Secret:
			if o.Type == corev1.SecretTypeOpaque || o.Type == "" {
				o.Data = desired.(*corev1.Secret).Data
			}
		}
		return nil
	})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
