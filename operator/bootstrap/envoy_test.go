package bootstrap

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

func TestEnvoyBootstrapPassesItsChecks(t *testing.T) {
	b, err := Envoy(EnvoyOptions{XDSAddress: "127.0.0.1:15010", NodeID: "app.shop", Cluster: "cluster-1", AdminPort: 15000})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckEnvoy(b); err != nil {
		t.Fatalf("the bootstrap fails its checks: %v", err)
	}
	if _, err := EnvoyJSON(b); err != nil {
		t.Fatal(err)
	}
	// What the checks catch.
	for name, breakIt := range map[string]func(*bootstrapv3.Bootstrap){
		"ADS on a cluster that is not there": func(b *bootstrapv3.Bootstrap) { b.StaticResources.Clusters[0].Name = "elsewhere" },
		"listeners not over ADS": func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.LdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: "/lds.yaml"}}}
		},
		"no node ID":       func(b *bootstrapv3.Bootstrap) { b.Node.Id = "" },
		"an invalid field": func(b *bootstrapv3.Bootstrap) { b.StaticResources.Clusters[0].Name = "" },
	} {
		broken := proto.Clone(b).(*bootstrapv3.Bootstrap)
		breakIt(broken)
		if err := CheckEnvoy(broken); err == nil {
			t.Errorf("%s: the checks pass", name)
		}
	}
	if _, err := Envoy(EnvoyOptions{XDSAddress: "nowhere", NodeID: "app.shop"}); err == nil {
		t.Error("a bootstrap without a port for the agent")
	}
}
