package mcs

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// OwnedLabels are the labels on every object the hub writes for a federation.
func OwnedLabels(federation string) map[string]string {
	return map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelFederation: federation}
}

// ServiceImport is the ServiceImport every member gets for imp. Its labels are the
// exported labels plus meshfed's own; its annotations are the exported annotations.
func ServiceImport(imp *Import, federation string) *mcsv1beta1.ServiceImport {
	labels := OwnedLabels(federation)
	for k, v := range imp.Labels {
		if _, ours := labels[k]; !ours {
			labels[k] = v
		}
	}
	si := &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: imp.Key.Namespace, Name: imp.Key.Name,
			Labels: labels, Annotations: imp.Annotations,
		},
		Spec: mcsv1beta1.ServiceImportSpec{
			Type:                  imp.Type,
			Ports:                 clonePorts(imp.Ports),
			SessionAffinity:       imp.SessionAffinity,
			SessionAffinityConfig: imp.SessionAffinityConfig.DeepCopy(),
			IPFamilies:            slices.Clone(imp.IPFamilies),
			InternalTrafficPolicy: ptrCopy(imp.InternalTrafficPolicy),
			TrafficDistribution:   ptrCopy(imp.TrafficDistribution),
		},
	}
	for _, c := range imp.Clusters {
		si.Status.Clusters = append(si.Status.Clusters, mcsv1beta1.ClusterStatus{Cluster: c})
	}
	return si
}

// Source is what the hub knows of one exporting cluster for EndpointSlice mirroring.
type Source struct {
	Cluster string
	Network string
	// Slices are the cluster's own EndpointSlices (managed by the EndpointSlice
	// controller there) of each exported service.
	Slices map[ServiceKey][]discoveryv1.EndpointSlice
}

// MirroredEndpointSlices returns the EndpointSlices that member gets for the endpoints of
// every exporting cluster of imp, the member itself included (an exporting cluster imports
// too, KEP-1645; the member's control plane takes its own endpoints from its own slices and
// skips the mirror of them): one mirror per source slice, labelled with the MCS labels, the
// source network and meshfed's ownership. Clusters in withdrawn contribute none (their
// endpoints have left the federation, e.g. after an outage's grace period). A source slice
// without endpoints gets no mirror: it would tell the member nothing, and a burst of new
// exports would cost a write per empty slice in every member.
func MirroredEndpointSlices(imp *Import, sources map[string]Source, withdrawn map[string]bool, federation string) []discoveryv1.EndpointSlice {
	var out []discoveryv1.EndpointSlice
	for _, cluster := range imp.Clusters {
		if withdrawn[cluster] {
			continue
		}
		src := sources[cluster]
		for _, shared := range src.Slices[imp.Key] {
			if len(shared.Endpoints) == 0 {
				continue
			}
			// The source may be a cache object: copy it whole, since a client decodes its
			// answer into the pointers of what it writes.
			s := shared.DeepCopy()
			labels := OwnedLabels(federation)
			labels[mcsv1beta1.LabelServiceName] = imp.Key.Name
			labels[mcsv1beta1.LabelSourceCluster] = cluster
			labels[discoveryv1.LabelManagedBy] = meshv1.EndpointSliceManager
			if src.Network != "" {
				labels[meshv1.LabelSourceNetwork] = src.Network
			}
			mirror := discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: imp.Key.Namespace,
					Name:      MirrorSliceName(imp.Key.Name, cluster, s.Name),
					Labels:    labels,
				},
				AddressType: s.AddressType,
				Ports:       s.Ports,
			}
			for _, ep := range s.Endpoints {
				mirror.Endpoints = append(mirror.Endpoints, discoveryv1.Endpoint{
					Addresses:  ep.Addresses,
					Conditions: ep.Conditions,
					Hostname:   ep.Hostname,
					Zone:       ep.Zone,
					// NodeName and TargetRef name objects of the source cluster: left out.
				})
			}
			out = append(out, mirror)
		}
	}
	return out
}

// MirrorSliceName is the deterministic name of the mirror of a source cluster's slice: the
// service name (cut to stay a valid name) and a hash of cluster and source slice.
func MirrorSliceName(service, cluster, sourceSlice string) string {
	sum := sha256.Sum256([]byte(cluster + "/" + sourceSlice))
	prefix := service
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	return prefix + "-" + hex.EncodeToString(sum[:])[:12]
}

func clonePorts(ports []mcsv1beta1.ServicePort) []mcsv1beta1.ServicePort {
	out := make([]mcsv1beta1.ServicePort, len(ports))
	for i := range ports {
		ports[i].DeepCopyInto(&out[i])
	}
	return out
}
