// Command meshfed-dns is CoreDNS v1.15.0 with the plugin clusterset, which answers the
// clusterset.local zone of the Multi-Cluster Services API from the member's imports
// (dns/coredns), and the plugins a DNS server in a cluster needs: bind, errors, log,
// health, ready, prometheus and cache. Run it with a Corefile (-conf), e.g.
//
//	clusterset.local:53 {
//	    errors
//	    health :8080
//	    ready :8181
//	    prometheus :9153
//	    cache 5
//	    clusterset
//	}
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"

	_ "github.com/meshfed/meshfed/dns/coredns"
)

func init() {
	// The order in which the plugins handle a query: CoreDNS's plugin.cfg, for these.
	dnsserver.Directives = []string{"bind", "ready", "health", "prometheus", "errors", "log", "cache", "clusterset"}
}

func main() { coremain.Run() }
