package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/meshfed/meshfed/internal/imagebuild"
)

// GRPCJSImageName is the testbed's grpc-js workload image: testbed/grpcjs/echo.js on
// @grpc/grpc-js-xds, the echo server and client of testbed/cmd/echo in another gRPC
// implementation.
const GRPCJSImageName = "grpcjs-echo"

// grpcJSEnv turns on what grpc-js-xds keeps behind environment switches (RBAC, gRFC A41)
// and meshfed sends.
var grpcJSEnv = []string{"GRPC_XDS_EXPERIMENTAL_RBAC=true"}

// GRPCJSImage builds the grpc-js workload image once and pushes it to the testbed's
// registry: node from PATH, the packages of testbed/grpcjs/package-lock.json (`npm ci`,
// kept in <bin>/grpcjs/<lockfile hash>), echo.js and echo.proto. It needs node and npm
// (Node.js 20) and the npm registry the first time.
func (tb *Testbed) GRPCJSImage(ctx context.Context) (string, error) {
	tb.buildMu.Lock()
	ref := tb.images[GRPCJSImageName]
	tb.buildMu.Unlock()
	if ref != "" {
		return ref, nil
	}
	src := filepath.Join(tb.repoRoot, "testbed", "grpcjs")
	modules, err := npmInstall(ctx, src, filepath.Join(tb.opts.BinDir, "grpcjs"))
	if err != nil {
		return "", err
	}
	program := filepath.Join(tb.Dir, "grpcjs")
	if err := os.MkdirAll(program, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"echo.js", "echo.proto"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(program, f), data, 0o644); err != nil {
			return "", err
		}
	}
	img, err := imagebuild.Node(ctx, tb.imageOptions(), GRPCJSImageName, "echo.js", grpcJSEnv, modules, program)
	if err != nil {
		return "", err
	}
	return tb.push(ctx, GRPCJSImageName, img)
}

// npmInstall installs the packages src's lockfile pins into a directory of cache named by
// the lockfile's hash, once, and returns it (package.json, the lockfile, node_modules).
func npmInstall(ctx context.Context, src, cache string) (string, error) {
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	manifest, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append([]byte{}, manifest...), lock...))
	dir := filepath.Join(cache, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("the grpc-js workload needs npm (Node.js 20): %w", err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	// Install beside the final directory and rename, so that a test package building the
	// image at the same time never sees half a node_modules.
	tmp, err := os.MkdirTemp(cache, "install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), manifest, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "package-lock.json"), lock, 0o644); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-bin-links", "--omit=dev", "--no-audit", "--no-fund")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", tmp, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules")); statErr != nil {
			return "", err
		}
	}
	return dir, nil
}
