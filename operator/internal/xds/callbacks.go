package xds

import (
	"context"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// callbacks count proxies, pushes, NACKs and convergence.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			if s.security != nil {
				s.mu.Lock()
				s.callers[id] = callerOf(ctx)
				s.mu.Unlock()
			}
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.mu.Lock()
			_, ok := s.streams[id]
			delete(s.streams, id)
			delete(s.callers, id)
			n := len(s.streams)
			s.mu.Unlock()
			if ok {
				connectedProxies.Set(float64(n))
				s.proxiesChanged()
			}
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if s.security != nil && req.Node != nil {
				if err := s.admit(id, req.Node); err != nil {
					return err
				}
			}
			s.onRequest(id, req)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			pushes.WithLabelValues(shortType(resp.TypeUrl)).Inc()
		},
	}
}

// onRequest tracks a stream's node and what it ACKs or NACKs.
func (s *Server) onRequest(id int64, req *discoveryv3.DiscoveryRequest) {
	s.mu.Lock()
	st, ok := s.streams[id]
	if !ok {
		st = &stream{acked: map[string]string{}}
		s.streams[id] = st
	}
	if req.Node != nil && req.Node.Id != "" {
		st.node, st.group = req.Node.Id, nodeGroup(req.Node)
	}
	newGroup := false
	if st.group != "" && st.group != GroupGRPC && !s.seen[st.group] {
		s.seen[st.group], newGroup = true, true
	}
	n := len(s.streams)
	typ := req.TypeUrl
	version := s.versionOf(st.group, typ)
	changedAt := s.changedAt[typ]
	if req.ErrorDetail != nil && req.ResponseNonce != "" {
		// The proxy refused the version it was sent, which is the current one. Recording
		// it as held keeps the snapshot cache from sending it again at once, in a loop;
		// the proxy gets the next version when there is one.
		req.VersionInfo = version
	}
	var converged time.Duration
	if req.ErrorDetail == nil && req.ResponseNonce != "" && req.VersionInfo == version && st.acked[typ] != version {
		st.acked[typ] = version
		if !changedAt.IsZero() {
			converged = time.Since(changedAt)
		}
	}
	node := st.node
	release := req.ErrorDetail == nil && req.ResponseNonce != "" && s.retiredReleasable()
	s.mu.Unlock()
	if newGroup || release {
		// The first node of its group: build its configuration. Or every proxy has the
		// routes that stopped using the retired clusters: serve without them.
		s.Trigger()
	}
	if !ok {
		connectedProxies.Set(float64(n))
		s.proxiesChanged()
	}
	if req.ErrorDetail != nil {
		nacks.WithLabelValues(shortType(typ)).Inc()
		s.log.Info("proxy rejected xDS configuration (NACK)", "node", node, "type", shortType(typ),
			"version", req.VersionInfo, "error", req.ErrorDetail.Message)
		return
	}
	if converged > 0 {
		convergence.WithLabelValues(shortType(typ)).Observe(converged.Seconds())
	}
}

// versionOf is the version of a resource type in a group's snapshot (s.mu held).
func (s *Server) versionOf(group, typ string) string {
	if group != GroupGRPC && group != "" {
		for i, t := range groupTypes {
			if t == typ {
				return s.groupVer[group][i]
			}
		}
		return ""
	}
	return s.versions[typ]
}

func (s *Server) proxiesChanged() {
	if s.onChange != nil {
		s.onChange()
	}
}

// shortType is a type URL's last element: Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment.
func shortType(url string) string {
	switch url {
	case resource.ListenerType:
		return "Listener"
	case resource.RouteType:
		return "RouteConfiguration"
	case resource.ClusterType:
		return "Cluster"
	case resource.EndpointType:
		return "ClusterLoadAssignment"
	case resource.SecretType:
		return "Secret"
	}
	return url
}
