package imagebuild_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/meshfed/meshfed/internal/imagebuild"
	"github.com/meshfed/meshfed/testbed"
)

// TestImagesInTheTestbedRegistry: the testbed's registry takes meshfed's images; they are
// pulled back by digest, unchanged, and an image that was never pushed is a clear
// MANIFEST_UNKNOWN (what a kubelet turns into ErrImagePull).
func TestImagesInTheTestbedRegistry(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Registry: true})
	ctx := context.Background()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range imagebuild.Images {
		img, err := imagebuild.Build(ctx, imagebuild.Options{RepoRoot: root, Version: "0.1.0", WorkDir: t.TempDir()}, spec)
		if err != nil {
			t.Fatal(err)
		}
		digest, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		tag, err := name.ParseReference(tb.Registry+"/meshfed/"+spec.Name+":0.1.0", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
			t.Fatalf("push %s: %v", tag, err)
		}
		byDigest, err := name.NewDigest(tb.Registry+"/meshfed/"+spec.Name+"@"+digest.String(), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Image(byDigest, remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("pull %s: %v", byDigest, err)
		}
		if got, _ := pulled.Digest(); got != digest {
			t.Errorf("%s pulled as %s", byDigest, got)
		}
		cfg, err := pulled.ConfigFile()
		if err != nil || cfg.Config.User != "65532:65532" {
			t.Errorf("%s: config %+v (%v)", byDigest, cfg, err)
		}
		t.Logf("%s@%s", tag, digest)
	}
	missing, err := name.ParseReference(tb.Registry+"/meshfed/not-pushed:0.1.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Image(missing, remote.WithContext(ctx))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		t.Fatalf("pulling an image never pushed: %v, want a 404", err)
	}
	t.Logf("an image never pushed: %v", err)
}
