// Package gatewayapi embeds the Gateway API CRDs meshfed reads (config/gateway-api), so
// that the testbed installs exactly what `kubectl apply -k config/gateway-api` installs.
package gatewayapi

import "embed"

// CRDs holds one YAML file per CRD.
//
//go:embed gateway.networking.k8s.io_*.yaml
var CRDs embed.FS
