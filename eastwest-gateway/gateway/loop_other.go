//go:build !linux

package gateway

import (
	"context"
	"net"
	"time"
)

// Serve accepts connections on ln until ctx ends; then it stops accepting and lets the
// connections in progress finish for up to drain, and closes what is left. Without epoll,
// it runs the portable data path (portable.go).
func (g *Gateway) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	return g.servePortable(ctx, ln, drain)
}
