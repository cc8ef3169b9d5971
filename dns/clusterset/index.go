// Package clusterset answers DNS queries for the clusterset.local zone of the Multi-Cluster
// Services API (KEP-1645) from what a member imports: its ServiceImports (their ClusterSet
// IPs and ports) and the MCS EndpointSlices of every exporting cluster.
//
//	<svc>.<ns>.svc.clusterset.local                   A/AAAA: the ClusterSet IPs; headless: every ready endpoint
//	_<port>._<proto>.<svc>.<ns>.svc.clusterset.local  SRV for each named port
//	<host>.<cluster>.<svc>.<ns>.svc.clusterset.local  A/AAAA: one endpoint of a headless service
//
// An Index is an immutable snapshot; Answer is a pure function of it and a question.
package clusterset

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Zone is the ClusterSet's DNS zone.
const Zone = "clusterset.local."

// Service is what the zone holds of one imported service.
type Service struct {
	Namespace, Name string
	Headless        bool
	// IPs are the ClusterSet IPs of a ClusterSetIP service.
	IPs   []netip.Addr
	Ports []Port
	// Endpoints are the ready endpoints of every exporting cluster (headless services).
	Endpoints []Endpoint
}

// Port is a named port of a service.
type Port struct {
	Name     string
	Protocol corev1.Protocol
	Port     uint16
}

// Endpoint is one ready endpoint address of a headless service.
type Endpoint struct {
	// Cluster is the exporting cluster's ID; Host the endpoint's hostname, or its address
	// with dashes when it has none.
	Cluster, Host string
	Addr          netip.Addr
}

// Index is a snapshot of the zone.
type Index struct {
	services map[string]*Service // "<ns>/<name>"
}

// Build indexes the imports and the MCS EndpointSlices (those labelled with the service
// and source cluster, as meshfed mirrors them). A ClusterSetIP import without ClusterSet
// IPs yet has no address records.
func Build(imports []mcsv1beta1.ServiceImport, endpointSlices []discoveryv1.EndpointSlice) *Index {
	ix := &Index{services: map[string]*Service{}}
	for i := range imports {
		si := &imports[i]
		s := &Service{Namespace: si.Namespace, Name: si.Name, Headless: si.Spec.Type == mcsv1beta1.Headless}
		for _, raw := range si.Spec.IPs {
			if a, err := netip.ParseAddr(raw); err == nil {
				s.IPs = append(s.IPs, a)
			}
		}
		for _, p := range si.Spec.Ports {
			if p.Name != "" && p.Port > 0 && p.Port <= 65535 {
				s.Ports = append(s.Ports, Port{Name: p.Name, Protocol: protocolOf(p.Protocol), Port: uint16(p.Port)})
			}
		}
		ix.services[si.Namespace+"/"+si.Name] = s
	}
	for i := range endpointSlices {
		sl := &endpointSlices[i]
		s := ix.services[sl.Namespace+"/"+sl.Labels[mcsv1beta1.LabelServiceName]]
		cluster := sl.Labels[mcsv1beta1.LabelSourceCluster]
		if s == nil || !s.Headless || cluster == "" {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, raw := range ep.Addresses {
				a, err := netip.ParseAddr(raw)
				if err != nil {
					continue
				}
				host := strings.NewReplacer(".", "-", ":", "-").Replace(a.String())
				if ep.Hostname != nil && *ep.Hostname != "" {
					host = *ep.Hostname
				}
				s.Endpoints = append(s.Endpoints, Endpoint{Cluster: cluster, Host: host, Addr: a})
			}
		}
	}
	for _, s := range ix.services {
		slices.SortFunc(s.Endpoints, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
		s.Endpoints = slices.CompactFunc(s.Endpoints, func(a, b Endpoint) bool { return a.Addr == b.Addr })
	}
	return ix
}

func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}
