package imagebuild_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/meshfed/meshfed/internal/imagebuild"
	"github.com/meshfed/meshfed/testbed"
)

func buildGateway(t *testing.T) v1.Image {
	t.Helper()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	o := imagebuild.Options{RepoRoot: root, Version: "0.1.0", Revision: "0123abcd", Source: "https://github.com/meshfed/meshfed",
		Created: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC), WorkDir: t.TempDir()}
	img, err := imagebuild.Build(context.Background(), o, imagebuild.Images[1])
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImagesAreReproducible: two builds from one tree, in different directories, give the
// same digest; the image is OCI, runs its static binary as 65532 with the OCI labels, and
// holds nothing but the minimal base and that binary.
func TestImagesAreReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway twice; skipped with -short")
	}
	a, b := buildGateway(t), buildGateway(t)
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("two builds of one tree: digests %s and %s", da, db)
	}
	t.Logf("eastwest-gateway %s", da)

	if mt, _ := a.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	cfg, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/ko-app/eastwest-gateway" {
		t.Errorf("user %q, entrypoint %q", cfg.Config.User, cfg.Config.Entrypoint)
	}
	for k, want := range map[string]string{"org.opencontainers.image.source": "https://github.com/meshfed/meshfed",
		"org.opencontainers.image.revision": "0123abcd", "org.opencontainers.image.version": "0.1.0"} {
		if got := cfg.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	files := map[string]*tar.Header{}
	var binary []byte
	tr := tar.NewReader(mutate.Extract(a))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
		if h.Name == "ko-app/eastwest-gateway" {
			if binary, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, shell := range []string{"bin/sh", "bin/bash", "bin/busybox"} {
		if files[shell] != nil {
			t.Errorf("the image has a shell: %s", shell)
		}
	}
	if h := files["tmp"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode&0o7777 != 0o1777 {
		t.Errorf("/tmp: %+v", h)
	}
	exe, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("the binary is not ELF: %v", err)
	}
	for _, p := range exe.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it cannot run without a libc in the image")
		}
	}
}
