package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Node makes the image named name that runs a Node.js program: the node binary found on
// PATH with the shared libraries it links (as ldd lists them, at their paths), and the
// files of appDirs (the program, its node_modules already installed) together in /app;
// the entrypoint is `node /app/<main>`, env is added to the image's environment. The
// testbed's grpc-js workload is such an image; meshfed ships none.
func Node(ctx context.Context, o Options, name, main string, env []string, appDirs ...string) (v1.Image, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("the node binary: %w (install Node.js 20)", err)
	}
	if node, err = filepath.EvalSymlinks(node); err != nil {
		return nil, err
	}
	libs, err := sharedLibraries(ctx, node)
	if err != nil {
		return nil, err
	}
	var files []file
	seen := map[string]bool{}
	add := func(p string, mode int64, data []byte) error {
		if seen[p] {
			return fmt.Errorf("%s comes twice", p)
		}
		seen[p] = true
		for d := path.Dir(p); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			files = append(files, file{path: d, dir: true, mode: 0o755, mtime: o.Created})
		}
		files = append(files, file{path: p, mode: mode, data: data, mtime: o.Created})
		return nil
	}
	for _, lib := range append([]string{node}, libs...) {
		data, err := os.ReadFile(lib)
		if err != nil {
			return nil, err
		}
		p := strings.TrimPrefix(lib, "/")
		if lib == node {
			p = "nodejs/bin/node"
		}
		if err := add(p, 0o555, data); err != nil {
			return nil, err
		}
	}
	for _, dir := range appDirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if !d.Type().IsRegular() {
				return fmt.Errorf("%s: only regular files go into the image", p)
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return add(path.Join("app", filepath.ToSlash(rel)), 0o444, data)
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	return assemble(o, name, files, []string{"/nodejs/bin/node", "/app/" + main},
		append([]string{"PATH=/nodejs/bin"}, env...))
}

// sharedLibraries lists the files bin loads at start: its libraries and the dynamic
// loader, as ldd reports them.
func sharedLibraries(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
		fields := strings.Fields(sc.Text())
		for _, f := range fields {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
				break
			}
		}
	}
	return libs, sc.Err()
}
