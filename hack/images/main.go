// Command images builds meshfed's images (internal/imagebuild) into OCI layouts under
// bin/images/<name> and pushes them to a registry, printing each reference with its
// digest. `make images` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/meshfed/meshfed/internal/imagebuild"
)

func main() {
	version := flag.String("version", "0.1.0", "the images' version (tag and label)")
	registry := flag.String("registry", "", "registry host:port to push to (empty: build the layouts only)")
	startRegistry := flag.String("start-registry", "", "registry binary to start on -registry when nothing answers there")
	registryDir := flag.String("registry-dir", ".testbed/registry", "storage of a registry started here")
	flag.Parse()
	if err := run(context.Background(), *version, *registry, *startRegistry, *registryDir); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, version, registry, registryBin, registryDir string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	o := imagebuild.Options{RepoRoot: root, Version: version, Source: "https://github.com/meshfed/meshfed",
		Revision: git(root, "rev-parse", "HEAD"), Created: time.Unix(0, 0).UTC()}
	if ts, err := strconv.ParseInt(git(root, "log", "-1", "--format=%ct"), 10, 64); err == nil {
		o.Created = time.Unix(ts, 0).UTC() // the commit's time: the same commit gives the same digest
	}
	if o.WorkDir, err = os.MkdirTemp("", "meshfed-images-"); err != nil {
		return err
	}
	defer os.RemoveAll(o.WorkDir)
	if registry != "" && registryBin != "" && !answers(registry) {
		if err := start(registryBin, registry, registryDir); err != nil {
			return err
		}
	}
	for _, spec := range imagebuild.Images {
		img, err := imagebuild.Build(ctx, o, spec)
		if err != nil {
			return err
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		dir := filepath.Join(root, "bin", "images", spec.Name)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendImage(img); err != nil {
			return err
		}
		if registry == "" {
			fmt.Printf("%s:%s@%s (OCI layout in %s)\n", spec.Name, version, digest, dir)
			continue
		}
		ref, err := name.ParseReference(registry+"/meshfed/"+spec.Name+":"+version, name.Insecure)
		if err != nil {
			return err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		fmt.Printf("%s@%s\n", ref, digest)
	}
	return nil
}

func git(dir string, args ...string) string {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// answers tells whether a registry answers at addr.
func answers(addr string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/v2/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// start runs the registry in the background, in a session of its own so that it outlives
// make, and waits until it answers.
func start(bin, addr, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(filepath.Dir(dir), "registry.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, "-addr", addr, "-dir", dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the registry: %w", err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if answers(addr) {
			fmt.Printf("started the local registry on %s (pid %d, storage %s; stop it with kill %d)\n", addr, cmd.Process.Pid, dir, cmd.Process.Pid)
			return nil
		}
	}
	return errors.New("the registry did not answer on " + addr + " within 20s: see " + log.Name())
}
