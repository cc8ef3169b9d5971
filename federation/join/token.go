package join

import (
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/tools/clientcmd"
)

// TokenClaims are what the hub reads of its token to renew it: whose it is and when it ends.
type TokenClaims struct {
	Namespace, ServiceAccount string
	// Expiry is zero for a token that never expires (the Secret-based tokens of joins
	// before tokens expired).
	Expiry time.Time
}

// signingAlgorithms are those a Kubernetes API server signs service-account tokens with.
var signingAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512}

// ParseServiceAccountToken reads the claims of a service-account token without checking its
// signature: the member checks that, and the hub only wants to know when to renew. ok is
// false for a token of another kind (not a JWT, or not a service account's).
func ParseServiceAccountToken(token string) (TokenClaims, bool) {
	parsed, err := jwt.ParseSigned(token, signingAlgorithms)
	if err != nil {
		return TokenClaims{}, false
	}
	var claims jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return TokenClaims{}, false
	}
	ns, name, err := serviceaccount.SplitUsername(claims.Subject)
	if err != nil {
		return TokenClaims{}, false
	}
	tc := TokenClaims{Namespace: ns, ServiceAccount: name}
	if claims.Expiry != nil {
		tc.Expiry = claims.Expiry.Time()
	}
	return tc, true
}

// TokenOf returns the bearer token of the kubeconfig's current context ("" when it has none).
func TokenOf(kubeconfig []byte) (string, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return "", err
	}
	if ctx := cfg.Contexts[cfg.CurrentContext]; ctx != nil {
		if user := cfg.AuthInfos[ctx.AuthInfo]; user != nil {
			return user.Token, nil
		}
	}
	return "", nil
}

// ReplaceToken returns the kubeconfig with the token of its current context's user
// replaced, everything else as it was.
func ReplaceToken(kubeconfig []byte, token string) ([]byte, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, err
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return nil, fmt.Errorf("the kubeconfig's current-context %q names no user", cfg.CurrentContext)
	}
	cfg.AuthInfos[ctx.AuthInfo].Token = token
	return clientcmd.Write(*cfg)
}
