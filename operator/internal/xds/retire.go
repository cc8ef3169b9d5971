package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/operator/internal/translate"
)

// Make before break. A proxy applies each resource type as it comes, and go-control-plane
// sends the types of a snapshot in no set order. A cluster that a new configuration drops
// (a split leg whose weight went to 0, say) must therefore outlive the routes that sent
// calls to it: grpc-go stops using a cluster as soon as it learns it is gone, and fails the
// calls its old routes still pick for it until the new routes arrive. So a dropped cluster
// and its endpoints stay in the snapshot until every gRPC proxy has ACKed the listeners and
// routes that no longer use it, or maxRetention has passed (a proxy that never answers
// does not hold them forever).

// maxRetention bounds how long a dropped cluster is still served (Server.retention).
const maxRetention = 10 * time.Second

// retiredCluster is a cluster the configuration dropped, still served for the proxies
// whose routes may use it.
type retiredCluster struct {
	cluster   *clusterv3.Cluster
	endpoints *endpointv3.ClusterLoadAssignment // nil when it had none
	since     time.Time
}

// withRetired returns res with the clusters the last served configuration had and res
// drops, while they are retired (s.mu held). A retired cluster leaves once every proxy
// ACKed the listeners and routes served with it, or after maxRetention; a cluster that
// comes back leaves the retired set.
func (s *Server) withRetired(res *translate.Resources, now time.Time) *translate.Resources {
	current := map[string]bool{}
	for _, c := range res.Clusters {
		current[c.Name] = true
	}
	if s.served != nil {
		endpoints := map[string]*endpointv3.ClusterLoadAssignment{}
		for _, e := range s.served.Endpoints {
			endpoints[e.ClusterName] = e
		}
		for _, c := range s.served.Clusters {
			if _, retired := s.retired[c.Name]; !current[c.Name] && !retired {
				s.retired[c.Name] = retiredCluster{cluster: c, endpoints: endpoints[c.Name], since: now}
				time.AfterFunc(s.retention, s.Trigger) // a push then drops it, if nothing did before
			}
		}
	}
	routed := s.proxiesHave(res.Versions[translate.VersionListeners], res.Versions[translate.VersionRoutes])
	for name, r := range s.retired {
		if current[name] || routed || now.Sub(r.since) >= s.retention {
			delete(s.retired, name)
		}
	}
	if len(s.retired) == 0 {
		return res
	}
	out := *res
	out.Clusters = slices.Clone(res.Clusters)
	out.Endpoints = slices.Clone(res.Endpoints)
	names := make([]string, 0, len(s.retired))
	for name := range s.retired {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := s.retired[name]
		out.Clusters = append(out.Clusters, r.cluster)
		if r.endpoints != nil {
			out.Endpoints = append(out.Endpoints, r.endpoints)
		}
	}
	// The versions name what is served: the configuration's, plus the retired clusters.
	sum := sha256.Sum256([]byte(fmt.Sprint(names)))
	suffix := "+retired-" + hex.EncodeToString(sum[:])[:8]
	out.Versions[translate.VersionClusters] += suffix
	out.Versions[translate.VersionEndpoints] += suffix
	return &out
}

// proxiesHave tells whether every gRPC proxy has ACKed these versions of the listeners
// and routes, of the types it watches (s.mu held).
func (s *Server) proxiesHave(listeners, routes string) bool {
	for _, st := range s.streams {
		if st.group != GroupGRPC {
			continue
		}
		for typ, want := range map[resource.Type]string{resource.ListenerType: listeners, resource.RouteType: routes} {
			if acked := st.acked[typ]; acked != "" && acked != want {
				return false
			}
		}
	}
	return true
}

// retiredReleasable tells whether a push would now drop the retired clusters: every gRPC
// proxy has the routes served with them (s.mu held).
func (s *Server) retiredReleasable() bool {
	return len(s.retired) > 0 && s.proxiesHave(s.versions[resource.ListenerType], s.versions[resource.RouteType])
}
