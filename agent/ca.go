package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
)

// askCA sends a CSR for the pod's identity to the member's CA service, with the pod's
// token, trusting the CA's certificate only if it chains to roots.
func (a *Agent) askCA(ctx context.Context, key *ecdsa.PrivateKey, roots *x509.CertPool) (*Credentials, error) {
	id := a.opts.SPIFFEID()
	csr, err := newCSR(key, id)
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(a.opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read the service-account token: %w", err)
	}
	body, err := json.Marshal(caapi.SignRequest{CSR: string(csr), LifetimeSeconds: int64(a.opts.Lifetime / time.Second)})
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(a.opts.CAAddress)
	if err != nil {
		return nil, fmt.Errorf("CA address %q: %w", a.opts.CAAddress, err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+a.opts.CAAddress+caapi.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("CA service %s: %w", a.opts.CAAddress, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var r caapi.Refusal
		if json.Unmarshal(data, &r) == nil && r.Reason != "" {
			return nil, fmt.Errorf("the CA refused: %s: %s", r.Reason, r.Message)
		}
		return nil, fmt.Errorf("the CA answered %s", resp.Status)
	}
	var signed caapi.SignResponse
	if err := json.Unmarshal(data, &signed); err != nil {
		return nil, fmt.Errorf("the CA's answer: %w", err)
	}
	if signed.CertChain == "" || signed.TrustBundle == "" {
		return nil, errors.New("the CA's answer has no certificate or no trust bundle")
	}
	return checkCredentials(key, id, []byte(signed.CertChain), []byte(signed.TrustBundle))
}
