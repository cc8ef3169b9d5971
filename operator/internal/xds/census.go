package xds

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Every replica of the operator serves xDS and the meshfed-xds Service spreads the proxies
// over them, so no replica sees them all. Each replica publishes its count in a Lease of
// the operator's namespace (its census Lease), renewed while it runs, deleted when it stops
// and owned by its Pod; the leader adds up the Leases that have not expired.

// CensusLabel marks the census Leases; its value is the replica's pod name.
const CensusLabel = "meshfed.io/xds-census"

// ProxiesAnnotation holds a census Lease's count.
const ProxiesAnnotation = "meshfed.io/connected-proxies"

const (
	censusLease = 30 * time.Second
	censusRenew = 10 * time.Second
)

// Census publishes this replica's proxy count (a manager.Runnable on every replica).
type Census struct {
	Client client.Client
	Server *Server
	// Namespace, Pod and PodUID name the replica's Pod (the downward API gives them).
	Namespace, Pod string
	PodUID         types.UID
	// Changed receives a signal when the replica's proxies come or go.
	Changed <-chan struct{}
	Log     logr.Logger
}

// NeedLeaderElection is false: every replica counts its own proxies.
func (c *Census) NeedLeaderElection() bool { return false }

// Start publishes the count on every change (at most once a second) and every censusRenew,
// and deletes the Lease when ctx ends.
func (c *Census) Start(ctx context.Context) error {
	renew := time.NewTicker(censusRenew)
	defer renew.Stop()
	for {
		if err := c.publish(ctx); err != nil && ctx.Err() == nil {
			c.Log.Error(err, "publishing the replica's proxy count failed; the Mesh status may undercount until the next try")
		}
		select {
		case <-ctx.Done():
			return c.withdraw()
		case <-renew.C:
		case <-c.Changed:
		}
		select {
		case <-ctx.Done():
			return c.withdraw()
		case <-time.After(time.Second):
		}
	}
}

func (c *Census) leaseName() string { return "meshfed-xds-" + c.Pod }

func (c *Census) publish(ctx context.Context) error {
	lease := &coordinationv1.Lease{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.leaseName()}, lease)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	create := apierrors.IsNotFound(err)
	if create {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: c.leaseName(),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: c.Pod, UID: c.PodUID}},
		}}
	}
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Labels[CensusLabel] = c.Pod
	lease.Annotations[ProxiesAnnotation] = strconv.Itoa(c.Server.Status().Proxies)
	lease.Spec.HolderIdentity = ptr.To(c.Pod)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(censusLease / time.Second))
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if create {
		return c.Client.Create(ctx, lease)
	}
	return c.Client.Update(ctx, lease)
}

// withdraw deletes the Lease so that the count drops as soon as the replica stops.
func (c *Census) withdraw() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.leaseName()}}
	if err := c.Client.Delete(ctx, lease); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the census Lease %s/%s: %w", c.Namespace, lease.Name, err)
	}
	return nil
}

// CountProxies adds up the proxy counts of the census Leases that have not expired at now.
// A Lease without a valid count counts nothing.
func CountProxies(leases []coordinationv1.Lease, now time.Time) int {
	total := 0
	for _, l := range leases {
		s := l.Spec
		if s.RenewTime == nil || s.LeaseDurationSeconds == nil ||
			!now.Before(s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds)*time.Second)) {
			continue
		}
		if n, err := strconv.Atoi(l.Annotations[ProxiesAnnotation]); err == nil && n > 0 {
			total += n
		}
	}
	return total
}
