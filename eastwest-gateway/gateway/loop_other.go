//go:build !linux

package gateway

import (
	"context"
	"errors"
	"net"
	"time"
)

// Serve needs Linux (epoll).
func (g *Gateway) Serve(context.Context, net.Listener, time.Duration) error {
	return errors.New("the east-west gateway runs on Linux")
}
