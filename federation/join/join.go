// Package join connects a member cluster to a hub with the least privilege the hub needs,
// and takes that access back: Join creates, in the member, a ServiceAccount bound to a
// ClusterRole holding exactly the rules the hub uses, a ValidatingAdmissionPolicy that
// keeps the hub's writes to meshfed's own objects, and stores in the hub a kubeconfig with a
// token of that ServiceAccount that expires (the hub renews it, RequestToken); Unjoin
// removes all of it and what the hub wrote. `meshfedctl join` and `unjoin` call them.
package join

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
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
	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Names of what Join creates in the member.
const (
	// MemberNamespace is the mesh namespace Join uses unless told another.
	MemberNamespace = meshv1.DefaultMeshNamespace
	ServiceAccount  = "meshfed-hub"
	ClusterRoleName = "meshfed:hub-access"
	// PolicyName names the ValidatingAdmissionPolicy (and its binding) that limits the
	// hub's writes where RBAC cannot.
	PolicyName = "meshfed-hub-writes"
	// legacyTokenSecret held the non-expiring token joins of earlier versions gave the
	// hub; Join and Unjoin delete it.
	legacyTokenSecret = "meshfed-hub-token"
)

// Token lifetimes: Join asks for DefaultTokenTTL; the member's admission policy refuses the
// hub a token that lives longer than MaxTokenTTL.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 48 * time.Hour
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
		{APIGroups: []string{aboutv1alpha1.GroupVersion.Group}, Resources: []string{"clusterproperties"}, Verbs: read},
		{APIGroups: []string{meshv1.GroupVersion.Group}, Resources: []string{"meshpeers"}, Verbs: write},
		// update: a new MeshPeer's status is written with the resourceVersion its create returned.
		{APIGroups: []string{meshv1.GroupVersion.Group}, Resources: []string{"meshpeers/status"}, Verbs: []string{"update", "patch"}},
	}
}

// NamespaceRules are what the hub does in the member's mesh namespace: it writes the
// member's signed intermediate, public material only, into one ConfigMap (create cannot be
// limited to a name in RBAC: the admission policy does it), and renews its own token. The
// hub holds no verb on Secrets: the member keeps its CA key.
func NamespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{trust.IntermediateConfigMap},
			Verbs: []string{"get", "update", "patch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{ServiceAccount},
			Verbs: []string{"create"}},
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
	// gets its token and may write meshfed-intermediate; the member operator's
	// --mesh-namespace must name the same. The kubeconfig Join writes carries it, so the
	// hub reads it there.
	Namespace string
	// TokenTTL is the life of the hub's first token (default DefaultTokenTTL, at most
	// MaxTokenTTL); the hub renews it before it ends.
	TokenTTL time.Duration
	// Timeout bounds each wait on the member: for its CA, for its admission policy to be
	// in force (default 30s).
	Timeout time.Duration
}

// SecretName is the name of the kubeconfig Secret Join writes for member name.
func SecretName(name string) string { return name + "-kubeconfig" }

// Join sets up the member's ServiceAccount, RBAC and admission policy, and writes the
// hub's kubeconfig Secret with a fresh token. It is idempotent: run it again to refresh
// the Secret, after an upgrade, or when the hub let its token expire.
func Join(ctx context.Context, o Options) (*corev1.Secret, error) {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.TokenTTL > MaxTokenTTL || o.TokenTTL < 10*time.Minute {
		return nil, fmt.Errorf("token lifetime %s: give one between 10m and %s", o.TokenTTL, MaxTokenTTL)
	}
	ns := namespaceOr(o.Namespace)
	policy, binding := AdmissionPolicy(ns)
	objs := append(accessObjects(ns), policy, binding)
	for _, obj := range objs {
		if err := apply(ctx, o.Member, obj); err != nil {
			return nil, fmt.Errorf("member %s: %T %s: %w", o.Name, obj, obj.GetName(), err)
		}
	}
	if err := deleteLegacyToken(ctx, o.Member, ns); err != nil {
		return nil, fmt.Errorf("member %s: %w", o.Name, err)
	}
	token, err := RequestToken(ctx, o.Member, ns, ServiceAccount, o.TokenTTL)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", o.Name, err)
	}
	ca, err := memberCA(ctx, o, ns)
	if err != nil {
		return nil, err
	}
	if err := waitPolicyInForce(ctx, o, ns, token); err != nil {
		return nil, fmt.Errorf("member %s: %w", o.Name, err)
	}
	kubeconfig, err := Kubeconfig(o.Name, serverOf(o), ca, token, ns)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.HubNamespace, Name: SecretName(o.Name), Labels: managedLabels()},
		Data:       map[string][]byte{"kubeconfig": kubeconfig},
	}
	if err := apply(ctx, o.Hub, secret); err != nil {
		return nil, fmt.Errorf("hub: Secret %s/%s: %w", o.HubNamespace, secret.Name, err)
	}
	return secret, nil
}

func namespaceOr(ns string) string {
	if ns == "" {
		return MemberNamespace
	}
	return ns
}

func managedLabels() map[string]string {
	return map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}
}

// accessObjects are the namespace, ServiceAccount and RBAC that give the hub its access, in
// the order Join creates them.
func accessObjects(ns string) []client.Object {
	labels := managedLabels()
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: ServiceAccount}}
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ServiceAccount, Labels: labels}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName, Labels: labels}, Rules: HubRules()},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ClusterRoleName},
			Subjects:   subjects,
		},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ClusterRoleName, Labels: labels}, Rules: NamespaceRules()},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ClusterRoleName, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ClusterRoleName},
			Subjects:   subjects,
		},
	}
}

func deleteLegacyToken(ctx context.Context, c client.Client, ns string) error {
	legacy := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: legacyTokenSecret}}
	if err := c.Delete(ctx, legacy); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete the non-expiring token Secret %s/%s: %w", ns, legacyTokenSecret, err)
	}
	return nil
}

// RequestToken asks the member for a token of ServiceAccount namespace/name that lives
// ttl. Join asks it with an admin connection; the hub renews its own token with it.
func RequestToken(ctx context.Context, c client.Client, namespace, name string, ttl time.Duration) (string, error) {
	seconds := int64(ttl / time.Second)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("request a token of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("the token request for ServiceAccount %s/%s returned no token", namespace, name)
	}
	return tr.Status.Token, nil
}

// waitPolicyInForce returns once the member's API server holds the hub's token to the
// admission policy: it loads a new policy within about a second, and the hub must not hold
// a token before. It asks, as the hub and without writing (dry run), to create a ConfigMap
// its Role allows and the policy does not.
func waitPolicyInForce(ctx context.Context, o Options, ns, token string) error {
	cfg := rest.AnonymousClientConfig(o.MemberConfig)
	cfg.BearerToken = token
	asHub, err := client.New(cfg, client.Options{Scheme: o.Member.Scheme()})
	if err != nil {
		return err
	}
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshfed-join-probe"}}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, o.Timeout, true, func(ctx context.Context) (bool, error) {
		last = asHub.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		// RBAC, catching up with the new Role, refuses too: only the policy names itself.
		return apierrors.IsForbidden(last) && strings.Contains(last.Error(), PolicyName), nil
	})
	if err == nil {
		return nil
	}
	if last == nil {
		last = errors.New("allowed")
	}
	return fmt.Errorf("the API server does not enforce the ValidatingAdmissionPolicy %s after %s (is its ValidatingAdmissionPolicy admission plugin on?): a write the policy refuses got: %w",
		PolicyName, o.Timeout, last)
}

// memberCA is the CA the hub verifies the member's API server with: the one the admin
// connection trusts (it verified the server the hub will dial), else the cluster's root CA
// the member publishes in every namespace (ConfigMap kube-root-ca.crt).
func memberCA(ctx context.Context, o Options, ns string) ([]byte, error) {
	cfg := rest.CopyConfig(o.MemberConfig)
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return nil, fmt.Errorf("member %s: %w", o.Name, err)
	}
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	var root corev1.ConfigMap
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, o.Timeout, true, func(ctx context.Context) (bool, error) {
		err := o.Member.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kube-root-ca.crt"}, &root)
		return err == nil && root.Data["ca.crt"] != "", client.IgnoreNotFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("member %s: the member kubeconfig names no CA and ConfigMap %s/kube-root-ca.crt holds none after %s (is kube-controller-manager running with --root-ca-file?): %w",
			o.Name, ns, o.Timeout, err)
	}
	return []byte(root.Data["ca.crt"]), nil
}

func serverOf(o Options) string {
	if o.Server != "" {
		return o.Server
	}
	return o.MemberConfig.Host
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
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			o.Spec = desired.(*admissionregistrationv1.ValidatingAdmissionPolicy).Spec
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			o.Spec = desired.(*admissionregistrationv1.ValidatingAdmissionPolicyBinding).Spec
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
