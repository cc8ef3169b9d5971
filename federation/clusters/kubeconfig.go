package clusters

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// RestConfig reads a member's kubeconfig as data, never as code: whoever may write the
// Secret it comes from chooses it, so the hub takes only an https server, inline CA data,
// and an inline bearer token or client certificate from its current context. An exec or
// auth-provider plugin, a file path (which the hub would read from its own disk: its own
// token, say), basic auth, impersonation, a proxy or skipping TLS verification is refused
// with an error that names the field. It also returns the mesh namespace the context
// names (meshv1.DefaultMeshNamespace when none).
func RestConfig(kubeconfig []byte) (*rest.Config, string, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, "", fmt.Errorf("the kubeconfig is not valid: %w", err)
	}
	ctxName := cfg.CurrentContext
	kctx := cfg.Contexts[ctxName]
	if kctx == nil {
		return nil, "", fmt.Errorf("the kubeconfig's current-context %q names no context: run meshfedctl join again", ctxName)
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	if cluster == nil || user == nil {
		return nil, "", fmt.Errorf("context %q names cluster %q and user %q, which the kubeconfig does not both have", ctxName, kctx.Cluster, kctx.AuthInfo)
	}
	field := func(kind, name, f string) string { return fmt.Sprintf("%s[%q].%s", kind, name, f) }
	var refused []string
	refuse := func(cond bool, kind, name, f, why string) {
		if cond {
			refused = append(refused, field(kind, name, f)+": "+why)
		}
	}
	c, u := kctx.Cluster, kctx.AuthInfo
	refuse(cluster.CertificateAuthority != "", "clusters", c, "certificate-authority", "a file path: give certificate-authority-data")
	refuse(cluster.InsecureSkipTLSVerify, "clusters", c, "insecure-skip-tls-verify", "the hub verifies members' servers")
	refuse(cluster.ProxyURL != "", "clusters", c, "proxy-url", "the hub talks to members directly")
	refuse(user.Exec != nil, "users", u, "exec", "the hub runs no program named by a kubeconfig")
	refuse(user.AuthProvider != nil, "users", u, "auth-provider", "the hub runs no auth provider named by a kubeconfig")
	refuse(user.TokenFile != "", "users", u, "tokenFile", "a file path: give the token inline")
	refuse(user.ClientCertificate != "", "users", u, "client-certificate", "a file path: give client-certificate-data")
	refuse(user.ClientKey != "", "users", u, "client-key", "a file path: give client-key-data")
	refuse(user.Username != "" || user.Password != "", "users", u, "username", "basic auth is not accepted")
	refuse(user.Impersonate != "" || user.ImpersonateUID != "" || len(user.ImpersonateGroups) > 0 || len(user.ImpersonateUserExtra) > 0,
		"users", u, "as", "impersonation is not accepted")
	server, err := url.Parse(cluster.Server)
	refuse(err != nil || server.Scheme != "https" || server.Host == "", "clusters", c, "server", fmt.Sprintf("%q is not an https URL", cluster.Server))
	refuse(len(cluster.CertificateAuthorityData) == 0, "clusters", c, "certificate-authority-data", "missing: the hub needs the member's CA to verify it")
	hasToken, hasCert := user.Token != "", len(user.ClientCertificateData) > 0 || len(user.ClientKeyData) > 0
	refuse(hasToken == hasCert, "users", u, "token", "give a bearer token or a client certificate (client-certificate-data and client-key-data), one of them")
	refuse(hasCert && (len(user.ClientCertificateData) == 0 || len(user.ClientKeyData) == 0), "users", u, "client-key-data", "a client certificate needs both its data and its key's")
	if len(refused) > 0 {
		return nil, "", errors.New("the kubeconfig is refused: " + strings.Join(refused, "; ") + " (meshfedctl join writes one the hub accepts)")
	}
	namespace := meshv1.DefaultMeshNamespace
	if kctx.Namespace != "" {
		namespace = kctx.Namespace
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, "", fmt.Errorf("the kubeconfig's context names the mesh namespace %q, which is not a namespace name (%s): run meshfedctl join again", namespace, strings.Join(errs, "; "))
	}
	return &rest.Config{
		Host:        cluster.Server,
		BearerToken: user.Token,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: cluster.CertificateAuthorityData, ServerName: cluster.TLSServerName,
			CertData: user.ClientCertificateData, KeyData: user.ClientKeyData,
		},
	}, namespace, nil
}
