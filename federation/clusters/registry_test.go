package clusters

import (
	"strings"
	"testing"

	"github.com/meshfed/meshfed/internal/testpki"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func kubeconfig(t *testing.T, namespace string) []byte {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["m"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", CertificateAuthorityData: testpki.New(t).PEM()}
	cfg.AuthInfos["m"] = &clientcmdapi.AuthInfo{Token: "t"}
	cfg.Contexts["m"] = &clientcmdapi.Context{Cluster: "m", AuthInfo: "m", Namespace: namespace}
	cfg.CurrentContext = "m"
	raw, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestMeshNamespaceFromTheKubeconfig: the member's mesh namespace is the one its
// kubeconfig's context names (meshfed-system when none), and a context naming something
// that is not a namespace name is refused before anything is written with it.
func TestMeshNamespaceFromTheKubeconfig(t *testing.T) {
	r := New(Options{})
	cases := []struct {
		name, namespace, want, refused string
	}{
		{name: "no namespace: the default", namespace: "", want: "meshfed-system"},
		{name: "the namespace join wrote", namespace: "mesh-corp", want: "mesh-corp"},
		{name: "a path is refused", namespace: "../kube-system", refused: "not a namespace name"},
		{name: "upper case is refused", namespace: "Mesh", refused: "not a namespace name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := r.Connect("fed", tc.name, kubeconfig(t, tc.namespace))
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("connected (%v), want an error saying %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Disconnect("fed", tc.name)
			if m.Namespace != tc.want {
				t.Errorf("mesh namespace %q, want %q", m.Namespace, tc.want)
			}
		})
	}
}
