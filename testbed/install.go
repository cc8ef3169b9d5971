package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MeshfedNamespace is where config/default installs the operator.
const MeshfedNamespace = "meshfed-system"

// installOverlay is the kustomization the testbed installs meshfed with: config/default,
// with the images pointed at the testbed's registry (by digest) and the operator's role.
const installOverlay = `# Written by the testbed: meshfed's own config/default, pointed at the local registry.
resources:
- %s
images:
- name: ghcr.io/meshfed/meshfed-operator
  newName: %s
  digest: %s
patches:
- target: {kind: Deployment, name: meshfed-operator}
  patch: |
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--gateway-image=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--dns-image=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--agent-image=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--role=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--pprof-bind-address=:8082"}
%s`

// Images are the references, by digest, of the images the testbed installed meshfed
// from (Options.Operator).
type Images struct {
	Operator, Gateway, Agent, DNS string
}

// meshfedImages builds meshfed's images from the source tree and pushes them to the
// registry, once for all clusters.
func (tb *Testbed) meshfedImages(ctx context.Context) (Images, error) {
	tb.progress("building meshfed's images")
	operator, err := tb.Image(ctx, "meshfed-operator", "./operator/cmd")
	if err != nil {
		return Images{}, err
	}
	gateway, err := tb.Image(ctx, "eastwest-gateway", "./eastwest-gateway/cmd/eastwest-gateway")
	if err != nil {
		return Images{}, err
	}
	agent, err := tb.Image(ctx, "meshfed-agent", "./agent/cmd/meshfed-agent")
	if err != nil {
		return Images{}, err
	}
	dns, err := tb.Image(ctx, "meshfed-dns", "./dns/cmd/meshfed-dns")
	if err != nil {
		return Images{}, err
	}
	return Images{Operator: operator, Gateway: gateway, Agent: agent, DNS: dns}, nil
}

// installMeshfed installs meshfed from tb.Images with `kubectl apply -k` of an overlay of
// config/default, then waits until the operator's Deployment is available and a replica
// leads.
func (c *Cluster) installMeshfed(ctx context.Context) error {
	c.tb.progress("%s: installing meshfed from config/default", c.Name)
	gateway := c.tb.Images.Gateway
	ref, err := name.NewDigest(c.tb.Images.Operator, name.Insecure)
	if err != nil {
		return err
	}
	dir := filepath.Join(c.Dir, "install")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base, err := filepath.Rel(dir, filepath.Join(c.tb.repoRoot, "config", "default"))
	if err != nil {
		return err
	}
	var extra strings.Builder
	for _, arg := range c.tb.opts.OperatorArgs {
		fmt.Fprintf(&extra, "    - {op: add, path: /spec/template/spec/containers/0/args/-, value: %q}\n", arg)
	}
	overlay := fmt.Sprintf(installOverlay, base, ref.Context().Name(), ref.DigestStr(), gateway, c.tb.Images.DNS, c.tb.Images.Agent, c.tb.opts.OperatorRole(c.Index), extra.String())
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		return err
	}
	if err := c.Kubectl(ctx, nil, "apply", "-k", dir); err != nil {
		return err
	}
	for _, arg := range c.tb.opts.OperatorArgs {
		if ns, ok := strings.CutPrefix(arg, "--mesh-namespace="); ok {
			if err := c.bindMeshNamespace(ctx, ns); err != nil {
				return err
			}
		}
	}
	// The account the testbed reads the operator's metrics as, bound before any read (the
	// operator caches a refusal for 30 s).
	if err := c.bindMetricsScraper(ctx); err != nil {
		return err
	}
	return c.waitOperator(ctx)
}

// bindMeshNamespace gives the operator in another mesh namespace than meshfed-system what
// config/rbac's member Role gives it in meshfed-system, and meshfed-dns there its account
// and read access, as docs/user-guide.md tells users to.
func (c *Cluster) bindMeshNamespace(ctx context.Context, ns string) error {
	const member = "meshfed-member"
	var role rbacv1.Role
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: member}, &role); err != nil {
		return fmt.Errorf("the operator's member Role in meshfed-system: %w", err)
	}
	var binding rbacv1.RoleBinding
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: MeshfedNamespace, Name: member}, &binding); err != nil {
		return fmt.Errorf("the operator's member RoleBinding in meshfed-system: %w", err)
	}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name}, Rules: role.Rules},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: binding.Name}, RoleRef: binding.RoleRef, Subjects: binding.Subjects},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshfed-dns"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshfed-dns-" + ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "meshfed-dns"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "meshfed-dns"}}},
	}
	for _, obj := range objs {
		if err := c.Client.Create(ctx, obj); client.IgnoreAlreadyExists(err) != nil {
			return fmt.Errorf("%T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}
