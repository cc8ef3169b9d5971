package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// loadBalancers gives each Service of type LoadBalancer an address, as a cloud's
// controller would: the address comes from the cluster's range 198.18.<o>.112/28, which
// the host routes into the cluster's network namespace, where kube-proxy forwards it to
// the Service's pods. Other clusters' pods reach it as they reach any address of the
// cluster (IsolateNetworks decides which).
type loadBalancers struct {
	c    *Cluster
	pool netip.Prefix

	mu   sync.Mutex
	used map[netip.Addr]string // address → namespace/name
}

func lbPool(o int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("198.18.%d.112/28", o)) }

// runLoadBalancers allocates until ctx ends.
func (c *Cluster) runLoadBalancers(ctx context.Context) error {
	lb := &loadBalancers{c: c, pool: lbPool(c.Octet), used: map[netip.Addr]string{}}
	factory := informers.NewSharedInformerFactory(c.Kube, 0)
	services := factory.Core().V1().Services().Informer()
	handle := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok {
			lb.sync(ctx, svc)
		}
	}
	if _, err := services.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if svc, ok := obj.(*corev1.Service); ok {
				lb.release(svc.Namespace + "/" + svc.Name)
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	return nil
}

// sync gives a LoadBalancer Service an address, or takes back the one of a Service that
// is no longer a LoadBalancer.
func (lb *loadBalancers) sync(ctx context.Context, svc *corev1.Service) {
	key := svc.Namespace + "/" + svc.Name
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		lb.release(key)
		return
	}
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		if ip, err := netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP); err == nil && lb.pool.Contains(ip) {
			lb.mu.Lock()
			lb.used[ip] = key // a restart of the allocator learns what it gave
			lb.mu.Unlock()
		}
		return
	}
	ip, err := lb.allocate(key)
	if err != nil {
		lb.c.tb.progress("%s: load balancer for %s: %v", lb.c.Name, key, err)
		return
	}
	svc = svc.DeepCopy()
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
	if _, err := lb.c.Kube.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		lb.release(key) // the next update of the Service tries again
	}
}

func (lb *loadBalancers) allocate(key string) (netip.Addr, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for ip, owner := range lb.used {
		if owner == key {
			return ip, nil
		}
	}
	for a := lb.pool.Addr(); lb.pool.Contains(a); a = a.Next() {
		if _, taken := lb.used[a]; !taken {
			lb.used[a] = key
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no load-balancer address left in %s", lb.pool)
}

func (lb *loadBalancers) release(key string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for ip, owner := range lb.used {
		if owner == key {
			delete(lb.used, ip)
		}
	}
}
