// Package bootstrap writes the xDS bootstrap of a proxyless gRPC workload of a meshfed
// member: where its control plane is, who the node is, and where its workload certificate
// and the member's trust bundle are (the files CertFiles names).
package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ServerListenerTemplate is the name template of the Listener an xDS gRPC server asks for;
// meshfed's control plane names server listeners this way.
const ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// CertProviderInstance is the certificate provider instance meshfed's xDS resources name.
const CertProviderInstance = "default"

// Files in a workload's certificate directory.
const (
	CertFile   = "cert.pem" // the workload certificate and the intermediate above it
	KeyFile    = "key.pem"
	BundleFile = "ca.pem" // the member's trust bundle
)

// Options describe one workload.
type Options struct {
	// XDSAddress is host:port of the member's xDS server.
	XDSAddress string
	// NodeID identifies the workload (for example <pod>.<namespace>); Cluster is the
	// member's cluster name.
	NodeID, Cluster string
	// CertDir holds CertFile, KeyFile and BundleFile; empty leaves mTLS out, and a control
	// plane that asks for it is refused (NACK).
	CertDir string
	// Refresh is how often the certificate files are re-read (default 2 s; grpc-go's own
	// default is 10 minutes, too slow for a root rotation).
	Refresh time.Duration
}

// JSON is the bootstrap, for GRPC_XDS_BOOTSTRAP (a file) or GRPC_XDS_BOOTSTRAP_CONFIG.
func JSON(o Options) ([]byte, error) {
	if o.XDSAddress == "" || o.NodeID == "" {
		return nil, errors.New("an xDS bootstrap needs the control plane's address and a node ID")
	}
	if o.Refresh <= 0 {
		o.Refresh = 2 * time.Second
	}
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      o.XDSAddress,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       o.NodeID,
			"cluster":  o.Cluster,
			"locality": map[string]any{"zone": o.Cluster},
		},
		"server_listener_resource_name_template": ServerListenerTemplate,
	}
	if o.CertDir != "" {
		b["certificate_providers"] = map[string]any{CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    filepath.Join(o.CertDir, CertFile),
				"private_key_file":    filepath.Join(o.CertDir, KeyFile),
				"ca_certificate_file": filepath.Join(o.CertDir, BundleFile),
				"refresh_interval":    fmt.Sprintf("%gs", o.Refresh.Seconds()), // protobuf JSON Duration
			},
		}}
	}
	return json.MarshalIndent(b, "", "  ")
}

// WriteCertFiles writes a workload's certificate (with its intermediate), key and trust
// bundle into dir for the file_watcher certificate provider. Each file is replaced in one
// rename, so a reader never sees half a file; the provider skips a moment where the
// certificate and key do not match yet.
func WriteCertFiles(dir string, certPEM, keyPEM, bundlePEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{BundleFile, bundlePEM}, {KeyFile, keyPEM}, {CertFile, certPEM}} {
		path := filepath.Join(dir, f.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}
