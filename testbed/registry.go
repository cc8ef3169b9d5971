package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// StartRegistry runs the local OCI registry (bin/registry: distribution v3 with
// filesystem storage) on a loopback address of the testbed, storing what is pushed in
// <Dir>/registry. Registry is then its host:port; it stops with the testbed.
func (tb *Testbed) StartRegistry(ctx context.Context) error {
	ip := fmt.Sprintf("127.%d.0.3", tb.leases[0].octet)
	port, err := FreePort(ip)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	dir := filepath.Join(tb.Dir, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := tb.start("registry", filepath.Join(tb.Dir, "registry.log"), []string{tb.bin("registry"), "-addr", addr, "-dir", dir})
	if err != nil {
		return err
	}
	tb.registry = p
	if err := PollEvery(ctx, 20*time.Second, 50*time.Millisecond, "registry ready", func(ctx context.Context) error {
		if p.exited() {
			return p.exitError()
		}
		return httpOK(ctx, "http://"+addr+"/v2/")
	}); err != nil {
		return err
	}
	tb.Registry = addr
	return nil
}
