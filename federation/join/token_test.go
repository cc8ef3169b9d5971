package join

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func signedToken(t *testing.T, claims jwt.Claims) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestParseServiceAccountToken: the hub learns whose token it holds and when it ends; a
// token of anything but a service account, or not a JWT, is not taken for one.
func TestParseServiceAccountToken(t *testing.T) {
	exp := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	got, ok := ParseServiceAccountToken(signedToken(t, jwt.Claims{Subject: "system:serviceaccount:mesh-corp:meshfed-hub", Expiry: jwt.NewNumericDate(exp)}))
	if !ok || got.Namespace != "mesh-corp" || got.ServiceAccount != "meshfed-hub" || !got.Expiry.Equal(exp) {
		t.Errorf("got %+v (ok %v), want mesh-corp/meshfed-hub until %s", got, ok, exp)
	}
	legacy, ok := ParseServiceAccountToken(signedToken(t, jwt.Claims{Subject: "system:serviceaccount:meshfed-system:meshfed-hub"}))
	if !ok || !legacy.Expiry.IsZero() {
		t.Errorf("a token without exp: got %+v (ok %v), want no expiry", legacy, ok)
	}
	for name, token := range map[string]string{
		"a user's token":  signedToken(t, jwt.Claims{Subject: "alice", Expiry: jwt.NewNumericDate(exp)}),
		"not a JWT":       "0123456789abcdef",
		"a JWT's pieces":  "a.b.c",
		"an empty string": "",
	} {
		if got, ok := ParseServiceAccountToken(token); ok {
			t.Errorf("%s was read as a service account's: %+v", name, got)
		}
	}
}

// TestReplaceToken: renewing changes the token and nothing else of the kubeconfig.
func TestReplaceToken(t *testing.T) {
	before, err := Kubeconfig("west", "https://west.example:6443", []byte("ca"), "old", "mesh-corp")
	if err != nil {
		t.Fatal(err)
	}
	after, err := ReplaceToken(before, "new")
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := TokenOf(after); err != nil || tok != "new" {
		t.Fatalf("token %q (%v), want new", tok, err)
	}
	want, err := Kubeconfig("west", "https://west.example:6443", []byte("ca"), "new", "mesh-corp")
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(want) {
		t.Errorf("kubeconfig after the renewal:\n%s\nwant:\n%s", after, want)
	}
	noUser := clientcmdapi.NewConfig()
	noUser.Contexts["west"] = &clientcmdapi.Context{Cluster: "west", AuthInfo: "west"}
	noUser.CurrentContext = "west"
	broken, err := clientcmd.Write(*noUser)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReplaceToken(broken, "new"); err == nil || !strings.Contains(err.Error(), "names no user") {
		t.Errorf("a kubeconfig without a user: got %v, want an error", err)
	}
}
