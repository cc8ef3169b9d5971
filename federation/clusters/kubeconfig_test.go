package clusters

import (
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestKubeconfigExecPluginIsRefused: a member kubeconfig is data, not code. What it may say,
// and each thing it may not (exec and auth-provider plugins, file paths...), named by its field.
func TestKubeconfigExecPluginIsRefused(t *testing.T) {
	good := func() *clientcmdapi.Config {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["m"] = &clientcmdapi.Cluster{Server: "https://member.example:6443", CertificateAuthorityData: []byte("ca")}
		cfg.AuthInfos["m"] = &clientcmdapi.AuthInfo{Token: "token"}
		cfg.Contexts["m"] = &clientcmdapi.Context{Cluster: "m", AuthInfo: "m"}
		cfg.CurrentContext = "m"
		return cfg
	}
	for _, tc := range []struct {
		name    string
		change  func(*clientcmdapi.Config)
		refused string
	}{
		{"a token", func(*clientcmdapi.Config) {}, ""},
		{"a client certificate", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"] = &clientcmdapi.AuthInfo{ClientCertificateData: []byte("cert"), ClientKeyData: []byte("key")}
		}, ""},
		{"an exec plugin", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"].Exec = &clientcmdapi.ExecConfig{Command: "/bin/sh", Args: []string{"-c", "id > /tmp/pwned"}}
		}, `users["m"].exec`},
		{"an auth provider", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"].AuthProvider = &clientcmdapi.AuthProviderConfig{Name: "oidc"}
		}, `users["m"].auth-provider`},
		{"the hub's own token by path", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"] = &clientcmdapi.AuthInfo{TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"}
		}, `users["m"].tokenFile`},
		{"a client key by path", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"] = &clientcmdapi.AuthInfo{ClientCertificate: "/etc/cert", ClientKey: "/etc/key"}
		}, `users["m"].client-certificate`},
		{"a CA by path", func(c *clientcmdapi.Config) {
			c.Clusters["m"].CertificateAuthority, c.Clusters["m"].CertificateAuthorityData = "/etc/ca", nil
		}, `clusters["m"].certificate-authority`},
		{"no TLS verification", func(c *clientcmdapi.Config) { c.Clusters["m"].InsecureSkipTLSVerify = true }, `clusters["m"].insecure-skip-tls-verify`},
		{"a proxy", func(c *clientcmdapi.Config) { c.Clusters["m"].ProxyURL = "http://attacker.example" }, `clusters["m"].proxy-url`},
		{"plain http", func(c *clientcmdapi.Config) { c.Clusters["m"].Server = "http://member.example" }, `clusters["m"].server`},
		{"basic auth", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"] = &clientcmdapi.AuthInfo{Username: "admin", Password: "admin"}
		}, `users["m"].username`},
		{"impersonation", func(c *clientcmdapi.Config) { c.AuthInfos["m"].Impersonate = "system:admin" }, `users["m"].as`},
		{"no credentials", func(c *clientcmdapi.Config) { c.AuthInfos["m"] = &clientcmdapi.AuthInfo{} }, `users["m"].token`},
		{"a certificate without its key", func(c *clientcmdapi.Config) {
			c.AuthInfos["m"] = &clientcmdapi.AuthInfo{ClientCertificateData: []byte("cert")}
		}, `users["m"].client-key-data`},
		{"a current context that is not there", func(c *clientcmdapi.Config) { c.CurrentContext = "other" }, `current-context "other"`},
	} {
		cfg := good()
		tc.change(cfg)
		raw, err := clientcmd.Write(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		rc, _, err := RestConfig(raw)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.refused == "" && rc.ExecProvider != nil:
			t.Errorf("%s: an exec provider in the config", tc.name)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("%s: %v, want a refusal naming %s", tc.name, err, tc.refused)
		}
	}
}
