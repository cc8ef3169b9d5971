// Package imagebuild assembles meshfed's OCI images without Docker: one static Go binary
// on a minimal base assembled here (an /etc/passwd and /etc/group naming the non-root user
// 65532, a /tmp, no shell, no package manager), with the OCI labels source, revision and
// version. A build is reproducible: the same source tree, Go toolchain and Options give the
// same digest, because the binary is built with -trimpath, every file in the layers has
// fixed owners, modes and times, and the image's creation time is Options.Created (the
// commit's time, not the clock's).
package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is one image meshfed ships: the Go package of its binary, and the repository's
// last path element.
type Image struct {
	Name    string
	Package string
}

// Images are the images `make images` builds.
var Images = []Image{
	{Name: "meshfed-operator", Package: "./operator/cmd"},
	{Name: "eastwest-gateway", Package: "./eastwest-gateway/cmd/eastwest-gateway"},
	{Name: "meshfed-agent", Package: "./agent/cmd/meshfed-agent"},
	{Name: "meshfed-dns", Package: "./dns/cmd/meshfed-dns"},
}

// NonRoot is the user and group the images run as.
const NonRoot = 65532

// Options say what to build from and what to stamp on the images.
type Options struct {
	// RepoRoot is the meshfed module's directory.
	RepoRoot string
	// Version, Revision and Source become the OCI labels (and Version the binaries'
	// version).
	Version, Revision, Source string
	// Created is the images' creation time and the time of every file in them.
	Created time.Time
	// WorkDir holds the binaries while they are built.
	WorkDir string
}

// Build compiles img's binary statically and assembles its image.
func Build(ctx context.Context, o Options, img Image) (v1.Image, error) {
	bin, err := buildBinary(ctx, o, img)
	if err != nil {
		return nil, err
	}
	return Assemble(o, img.Name, bin)
}

// Assemble makes the image named name around bin, a static binary: the minimal base,
// then bin as /ko-app/<name>, its entrypoint.
func Assemble(o Options, name string, bin []byte) (v1.Image, error) {
	return assemble(o, name, []file{{path: "ko-app/" + name, mode: 0o555, data: bin, mtime: o.Created}},
		[]string{"/ko-app/" + name}, []string{"PATH=/ko-app"})
}

// assemble makes the image named name: the minimal base, then one layer of app, run as
// the non-root user with entrypoint and env.
func assemble(o Options, name string, app []file, entrypoint, env []string) (v1.Image, error) {
	base, err := layer(baseFiles(o.Created))
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	appLayer, err := layer(app)
	if err != nil {
		return nil, fmt.Errorf("%s layer: %w", name, err)
	}
	out, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), base, appLayer)
	if err != nil {
		return nil, err
	}
	out = mutate.ConfigMediaType(out, types.OCIConfigJSON)
	cfg, err := out.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: o.Created}
	cfg.Config = v1.Config{
		Entrypoint: entrypoint,
		User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		WorkingDir: "/",
		Env:        env,
		Labels: map[string]string{
			"org.opencontainers.image.source":   o.Source,
			"org.opencontainers.image.revision": o.Revision,
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.title":    name,
		},
	}
	return mutate.ConfigFile(out, cfg)
}

// buildBinary builds img's package as a static linux binary, reproducibly.
func buildBinary(ctx context.Context, o Options, img Image) ([]byte, error) {
	out := filepath.Join(o.WorkDir, img.Name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags=vtprotobuf",
		"-ldflags=-s -w -X github.com/meshfed/meshfed/operator/internal/app.Version="+o.Version,
		"-o", out, img.Package)
	cmd.Dir = o.RepoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=-buildvcs=false")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", img.Package, err, msg)
	}
	return os.ReadFile(out)
}

// file is one entry of a layer: a directory, or a regular file holding data.
type file struct {
	path  string
	dir   bool
	mode  int64
	uid   int
	data  []byte
	mtime time.Time
}

// baseFiles are the minimal base: the non-root user, a writable /tmp, its home.
func baseFiles(mtime time.Time) []file {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRoot)
	return []file{
		{path: "etc", dir: true, mode: 0o755, mtime: mtime},
		{path: "etc/passwd", mode: 0o644, data: []byte(passwd), mtime: mtime},
		{path: "etc/group", mode: 0o644, data: []byte(group), mtime: mtime},
		{path: "home", dir: true, mode: 0o755, mtime: mtime},
		{path: "home/nonroot", dir: true, mode: 0o700, uid: NonRoot, mtime: mtime},
		{path: "ko-app", dir: true, mode: 0o755, mtime: mtime},
		{path: "tmp", dir: true, mode: 0o1777, mtime: mtime},
	}
}

// layer is a gzipped OCI layer of files, written in path order with fixed metadata.
func layer(files []file) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.path, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: f.mtime, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.path+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}
