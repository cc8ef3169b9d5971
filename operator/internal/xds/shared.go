package xds

import (
	"context"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// sharedCache is go-control-plane's snapshot cache with one encoding of each resource for
// all the proxies it is sent to. The snapshot cache encodes the resources of every
// response anew: an endpoints resource that 1,000 proxies watch was encoded 1,000 times
// at each change, a third of a push's CPU. Here a response's resources are taken from the
// group's snapshot and encoded once per message (the translator keeps the message of a
// resource that did not change, so an encoding lives as long as its resource).
//
// Responses go through a goroutine per open watch: the snapshot cache writes them to a
// channel of the watch's own, and the goroutine passes them on to the server's. A watch
// of the snapshot cache answers at most once, and cancelling the watch waits for its
// goroutine, so the server sees the same responses, in the same cases, as from the
// snapshot cache itself.
type sharedCache struct {
	cachev3.SnapshotCache

	mu sync.Mutex
	// encoded holds the encodings made, by resource message.
	encoded map[types.Resource]*anypb.Any
	// live is how many resources the snapshots held when encoded was last pruned.
	live int
}

func newSharedCache(c cachev3.SnapshotCache) *sharedCache {
	return &sharedCache{SnapshotCache: c, encoded: map[types.Resource]*anypb.Any{}}
}

// CreateWatch opens a watch on the snapshot cache whose response, if any, reaches out with
// the shared encodings.
func (c *sharedCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	in := make(chan cachev3.Response, 1)
	cancel, err := c.SnapshotCache.CreateWatch(req, sub, in)
	if err != nil {
		return nil, err
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case resp := <-in:
			select {
			case out <- c.share(resp):
			case <-done:
			}
		case <-done:
		}
	}()
	// The server may cancel a watch twice (when a new watch for its type fails).
	return sync.OnceFunc(func() {
		if cancel != nil {
			cancel()
		}
		close(done)
		<-exited
	}), nil
}

// share returns resp with its resources' shared encodings. A response it cannot match
// with the group's current snapshot (the snapshot changed since) is returned as it is:
// the snapshot cache encodes it.
func (c *sharedCache) share(resp cachev3.Response) cachev3.Response {
	raw, ok := resp.(*cachev3.RawResponse)
	if !ok || raw.Heartbeat {
		return resp
	}
	req := raw.GetRequest()
	typeURL := req.GetTypeUrl()
	snap, err := c.GetSnapshot(nodeGroup(req.GetNode()))
	if err != nil || snap.GetVersion(typeURL) != raw.Version {
		return resp
	}
	items := snap.GetResourcesAndTTL(typeURL)
	names := raw.GetReturnedResources()
	out := &discoveryv3.DiscoveryResponse{VersionInfo: raw.Version, TypeUrl: typeURL, Resources: make([]*anypb.Any, 0, len(names))}
	for name := range names {
		item, ok := items[name]
		if !ok || item.TTL != nil {
			return resp
		}
		a, err := c.encoding(typeURL, item.Resource)
		if err != nil {
			return resp
		}
		out.Resources = append(out.Resources, a)
	}
	return &cachev3.PassthroughResponse{Request: req, DiscoveryResponse: out, ReturnedResources: names}
}

// encoding is the encoding of r, made on first use, as the snapshot cache makes it.
func (c *sharedCache) encoding(typeURL string, r types.Resource) (*anypb.Any, error) {
	c.mu.Lock()
	a, ok := c.encoded[r]
	c.mu.Unlock()
	if ok {
		return a, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, err
	}
	a = &anypb.Any{TypeUrl: typeURL, Value: b}
	c.mu.Lock()
	c.encoded[r] = a
	c.mu.Unlock()
	return a, nil
}

// SetSnapshot sets a group's snapshot and, once the encodings outnumber twice what the
// snapshots held at the last count, forgets those of resources no snapshot holds.
func (c *sharedCache) SetSnapshot(ctx context.Context, group string, snap cachev3.ResourceSnapshot) error {
	if err := c.SnapshotCache.SetSnapshot(ctx, group, snap); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.encoded) <= 2*c.live+256 {
		return nil
	}
	held := map[types.Resource]bool{}
	for _, g := range []string{GroupGRPC, GroupEnvoy, GroupGateway} {
		s, err := c.GetSnapshot(g)
		if err != nil {
			continue
		}
		for _, typeURL := range groupTypes {
			for _, r := range s.GetResources(typeURL) {
				held[r] = true
			}
		}
	}
	for r := range c.encoded {
		if !held[r] {
			delete(c.encoded, r)
		}
	}
	c.live = len(held)
	return nil
}
