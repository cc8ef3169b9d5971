// Command registry is distribution's OCI registry with only its filesystem and in-memory
// storage drivers (the cloud drivers of its cmd/registry stay out of the build): the
// testbed's local registry, to which `make images` pushes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "address to listen on")
	dir := flag.String("dir", "", "directory of the filesystem storage (empty: in memory)")
	flag.Parse()
	cfg := &configuration.Configuration{Version: "0.1"}
	cfg.HTTP.Addr = *addr
	cfg.HTTP.Secret = "meshfed-local-registry" // one instance: the secret only signs its upload state
	cfg.Log.Level = "warn"
	cfg.Log.AccessLog.Disabled = true
	if *dir != "" {
		cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": *dir}}
	} else {
		cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	}
	cfg.Storage["delete"] = configuration.Parameters{"enabled": true}
	r, err := registry.NewRegistry(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
	if err := r.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}
