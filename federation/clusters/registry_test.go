package clusters

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestRenewedTokenKeepsTheMember: a kubeconfig that differs only in its token (the hub
// renewed it) keeps the member, its cache and its connections, and the next request
// carries the new token; any other change connects anew.
func TestRenewedTokenKeepsTheMember(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			mu.Lock()
			seen = append(seen, r.Header.Get("Authorization"))
			mu.Unlock()
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	config := func(server, token string) []byte {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["m"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
		cfg.AuthInfos["m"] = &clientcmdapi.AuthInfo{Token: token}
		cfg.Contexts["m"] = &clientcmdapi.Context{Cluster: "m", AuthInfo: "m"}
		cfg.CurrentContext = "m"
		raw, err := clientcmd.Write(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	lastSeen := func(want string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(seen) == 0 || seen[len(seen)-1] != want {
				return fmt.Errorf("the last probes carried %q", seen[max(0, len(seen)-3):])
			}
			return nil
		}
	}
	r := New(Options{ProbeInterval: 20 * time.Millisecond})
	defer r.Disconnect("fed", "m")
	first, err := r.Connect("fed", "m", config(srv.URL, "first"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, lastSeen("Bearer first"))
	renewed, err := r.Connect("fed", "m", config(srv.URL, "renewed"))
	if err != nil {
		t.Fatal(err)
	}
	if renewed != first {
		t.Fatal("a renewed token reconnected the member (its cache starts over)")
	}
	eventually(t, lastSeen("Bearer renewed"))
	moved, err := r.Connect("fed", "m", config(strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), "renewed"))
	if err != nil {
		t.Fatal(err)
	}
	if moved == first {
		t.Error("a kubeconfig naming another server kept the member")
	}
}

func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
