package xds

import (
	"errors"
	"net/url"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestAuthorizeTakesTheNodeFromTheCertificate(t *testing.T) {
	id := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	node := func(nodeID, group string) *corev3.Node {
		n := &corev3.Node{Id: nodeID}
		if group != "" {
			n.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{NodeProxyField: structpb.NewStringValue(group)}}
		}
		return n
	}
	client := id("spiffe://cluster.local/ns/shop/sa/client")
	gateway := id("spiffe://cluster.local/ns/meshfed-system/sa/meshfed-eastwest-gateway")
	for _, tc := range []struct {
		name   string
		id     *url.URL
		node   *corev3.Node
		group  string
		reason string
	}{
		{"a workload as its pod", client, node("client-7d9.shop", ""), GroupGRPC, ""},
		{"a pod name with dots", client, node("client.v2.shop", ""), GroupGRPC, ""},
		{"a workload as a pod of another namespace", client, node("admin.kube-system", ""), "", "NodeMismatch"},
		{"a node ID without a namespace", client, node("client", ""), "", "NodeMismatch"},
		{"a node ID that is only the namespace", client, node(".shop", ""), "", "NodeMismatch"},
		{"a workload that claims to be a gateway", client, node("client.shop", GroupGateway), "", "GroupMismatch"},
		{"a workload that claims to be an Envoy", client, node("client.shop", GroupEnvoy), "", "GroupMismatch"},
		{"an Envoy-injected pod", client, node("sidecar.shop", GroupEnvoy), GroupEnvoy, ""},
		{"an Envoy-injected pod without metadata", client, node("sidecar.shop", ""), GroupEnvoy, ""},
		{"an Envoy-injected pod that claims to be a gateway", client, node("sidecar.shop", GroupGateway), "", "GroupMismatch"},
		{"the gateway", gateway, node("eastwest-gateway~pod-1", GroupGateway), GroupGateway, ""},
		{"the gateway without metadata", gateway, node("eastwest-gateway~pod-1", ""), GroupGateway, ""},
		{"the gateway claiming Envoy", gateway, node("gw", GroupEnvoy), "", "GroupMismatch"},
		{"the gateway's account in another namespace", id("spiffe://cluster.local/ns/shop/sa/meshfed-eastwest-gateway"), node("x.shop", GroupGateway), "", "GroupMismatch"},
		{"another trust domain", id("spiffe://evil.example/ns/shop/sa/client"), node("client.shop", ""), "", "ForeignIdentity"},
		{"not a workload path", id("spiffe://cluster.local/admin"), node("client.shop", ""), "", "ForeignIdentity"},
		{"no identity", nil, node("client.shop", ""), "", "NoIdentity"},
	} {
		group, err := Authorize(tc.id, tc.node, "cluster.local", "meshfed-system", func(namespace, pod string) (string, error) {
			if namespace == "shop" && pod == "sidecar" {
				return GroupEnvoy, nil
			}
			return GroupGRPC, nil
		})
		reason := ""
		if r := (*refusal)(nil); errors.As(err, &r) {
			reason = r.reason
		} else if err != nil {
			t.Fatalf("%s: %v is not a refusal", tc.name, err)
		}
		if group != tc.group || reason != tc.reason {
			t.Errorf("%s: group %q reason %q (%v), want %q %q", tc.name, group, reason, err, tc.group, tc.reason)
		}
	}
}
