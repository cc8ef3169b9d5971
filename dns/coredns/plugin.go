// Package coredns is the CoreDNS plugin "clusterset": it answers the clusterset.local zone
// (KEP-1645) from the member's ServiceImports and MCS EndpointSlices (dns/clusterset) and
// passes every other name to the next plugin.
//
//	clusterset.local {
//	    clusterset {
//	        kubeconfig /path/to/kubeconfig   # default: in-cluster
//	        ttl 5                            # seconds, 0 to 3600
//	    }
//	}
package coredns

import (
	"context"
	"strconv"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/dns/clusterset"
)

// Name is the plugin's name in a Corefile.
const Name = "clusterset"

var log = clog.NewWithPlugin(Name)

var responses = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: plugin.Namespace, Subsystem: Name, Name: "responses_total",
	Help: "Answers of the clusterset.local zone, by response code.",
}, []string{"rcode"})

func init() { plugin.Register(Name, setup) }

// Handler answers the zone from its Source.
type Handler struct {
	Next   plugin.Handler
	Source *clusterset.Source
	TTL    uint32
}

// ServeDNS answers a question of the zone, or hands it on.
func (h *Handler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	resp, ok := h.Source.Index().Respond(r, h.TTL)
	if !ok {
		return plugin.NextOrFailure(Name, h.Next, ctx, w, r)
	}
	responses.WithLabelValues(dns.RcodeToString[resp.Rcode]).Inc()
	if err := w.WriteMsg(resp); err != nil {
		return dns.RcodeServerFailure, err
	}
	return resp.Rcode, nil
}

// Name implements plugin.Handler.
func (h *Handler) Name() string { return Name }

// Ready tells the ready plugin whether the zone holds what the cluster does.
func (h *Handler) Ready() bool { return h.Source.Synced() }

func setup(c *caddy.Controller) error {
	kubeconfig, ttl := "", uint32(5)
	c.Next() // "clusterset"
	if len(c.RemainingArgs()) > 0 {
		return plugin.Error(Name, c.ArgErr())
	}
	for c.NextBlock() {
		switch c.Val() {
		case "kubeconfig":
			if !c.NextArg() {
				return plugin.Error(Name, c.ArgErr())
			}
			kubeconfig = c.Val()
		case "ttl":
			if !c.NextArg() {
				return plugin.Error(Name, c.ArgErr())
			}
			n, err := strconv.ParseUint(c.Val(), 10, 32)
			if err != nil || n > 3600 {
				return plugin.Error(Name, c.Errf("ttl %q: give seconds from 0 to 3600", c.Val()))
			}
			ttl = uint32(n)
		default:
			return plugin.Error(Name, c.Errf("unknown property %q: clusterset takes kubeconfig and ttl", c.Val()))
		}
	}
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return plugin.Error(Name, err)
	}
	src, err := clusterset.NewSource(cfg)
	if err != nil {
		return plugin.Error(Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.OnStartup(func() error {
		go func() {
			if err := src.Run(ctx); err != nil && ctx.Err() == nil {
				log.Errorf("watching the cluster stopped: %v", err)
			}
		}()
		return nil
	})
	c.OnShutdown(func() error { cancel(); return nil })
	h := &Handler{Source: src, TTL: ttl}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
