package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// XDSFiles is the gateway's identity for its xDS server: a certificate and key (a
// kubernetes.io/tls Secret's tls.crt and tls.key) and the federation's trust bundle. The
// files are read again for each connection, so that renewed certificates and a rotated
// bundle are used without a restart.
type XDSFiles struct {
	CertDir    string
	BundleFile string
}

// TLSConfig presents the certificate and checks the server's against the bundle and the
// host of address.
func (f XDSFiles) TLSConfig(address string) *tls.Config {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(filepath.Join(f.CertDir, "tls.crt"), filepath.Join(f.CertDir, "tls.key"))
			if err != nil {
				return nil, fmt.Errorf("the gateway's xDS certificate: %w", err)
			}
			return &pair, nil
		},
		// The bundle is read at each handshake: the chain is verified here.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			data, err := os.ReadFile(f.BundleFile)
			if err != nil {
				return fmt.Errorf("the trust bundle: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(data) {
				return errors.New("the trust bundle holds no certificate")
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the xDS server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}
