package xds

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestCountProxiesAddsUpTheLiveReplicas(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	lease := func(count string, renewed time.Duration) coordinationv1.Lease {
		return coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ProxiesAnnotation: count}},
			Spec: coordinationv1.LeaseSpec{
				RenewTime:            &metav1.MicroTime{Time: now.Add(-renewed)},
				LeaseDurationSeconds: ptr.To(int32(30)),
			},
		}
	}
	for _, tc := range []struct {
		name   string
		leases []coordinationv1.Lease
		want   int
	}{
		{"no replicas", nil, 0},
		{"two live replicas", []coordinationv1.Lease{lease("3", time.Second), lease("4", 29*time.Second)}, 7},
		{"an expired replica counts nothing", []coordinationv1.Lease{lease("3", time.Second), lease("4", 30*time.Second)}, 3},
		{"a count that is not a number counts nothing", []coordinationv1.Lease{lease("3", 0), lease("many", 0), lease("-5", 0)}, 3},
		{"a Lease never renewed counts nothing", []coordinationv1.Lease{{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ProxiesAnnotation: "9"}}}}, 0},
	} {
		if got := CountProxies(tc.leases, now); got != tc.want {
			t.Errorf("%s: %d proxies, want %d", tc.name, got, tc.want)
		}
	}
}
