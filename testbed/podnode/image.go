package podnode

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
)

// imageConfig is what an image says to run.
type imageConfig = v1.Config

// image is an unpacked image: its root file system and what its config says to run.
type image struct {
	// Digest is the manifest digest; ID is "<repository>@<digest>" (a container's ImageID).
	Digest, ID string
	// Rootfs is the unpacked file system, shared by every container of the image and never
	// written after unpacking.
	Rootfs string
	Config imageConfig
}

// images pulls from OCI registries and unpacks each image once per digest under dir.
type images struct {
	dir      string
	insecure map[string]bool // registries spoken to over plain HTTP

	mu       sync.Mutex
	byTag    map[string]string      // reference → digest, for IfNotPresent
	unpacked map[string]*image      // by digest
	inflight map[string]*sync.Mutex // one unpacking per digest at a time
}

func newImages(dir string, insecure []string) *images {
	s := &images{dir: dir, insecure: map[string]bool{}, byTag: map[string]string{},
		unpacked: map[string]*image{}, inflight: map[string]*sync.Mutex{}}
	for _, r := range insecure {
		s.insecure[r] = true
	}
	return s
}

// errPull is a failed pull: the kubelet reports it as ErrImagePull.
type errPull struct {
	ref string
	err error
}

func (e *errPull) Error() string {
	return fmt.Sprintf("failed to pull image %q: %v", e.ref, e.err)
}

func (e *errPull) Unwrap() error { return e.err }

// get returns the unpacked image for ref, pulling it as policy says.
func (s *images) get(ctx context.Context, ref string, policy corev1.PullPolicy) (*image, error) {
	var opts []name.Option
	if r, err := name.ParseReference(ref); err == nil && s.insecure[r.Context().RegistryStr()] {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, &errPull{ref: ref, err: err}
	}
	if digest, ok := parsed.(name.Digest); ok {
		if img := s.cached(digest.DigestStr()); img != nil {
			return img, nil
		}
	} else if policy != corev1.PullAlways {
		s.mu.Lock()
		d := s.byTag[ref]
		s.mu.Unlock()
		if img := s.cached(d); img != nil {
			return img, nil
		}
	}
	if policy == corev1.PullNever {
		return nil, &errPull{ref: ref, err: errors.New("image is not present and the pull policy is Never")}
	}
	remoteImg, err := remote.Image(parsed, remote.WithContext(ctx))
	if err != nil {
		return nil, &errPull{ref: ref, err: err}
	}
	digest, err := remoteImg.Digest()
	if err != nil {
		return nil, &errPull{ref: ref, err: err}
	}
	img, err := s.unpack(parsed.Context().Name(), digest.String(), remoteImg)
	if err != nil {
		return nil, &errPull{ref: ref, err: err}
	}
	s.mu.Lock()
	s.byTag[ref] = digest.String()
	s.mu.Unlock()
	return img, nil
}

func (s *images) cached(digest string) *image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unpacked[digest]
}

// unpack extracts img's flattened layers into <dir>/<digest>, once.
func (s *images) unpack(repo, digest string, img v1.Image) (*image, error) {
	s.mu.Lock()
	lock := s.inflight[digest]
	if lock == nil {
		lock = &sync.Mutex{}
		s.inflight[digest] = lock
	}
	s.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	if done := s.cached(digest); done != nil {
		return done, nil
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir := filepath.Join(s.dir, strings.ReplaceAll(digest, ":", "-"))
	tmp := dir + ".unpacking"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	flat := mutate.Extract(img)
	defer flat.Close()
	if err := untar(flat, tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("unpack: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	out := &image{Digest: digest, ID: repo + "@" + digest, Rootfs: dir, Config: cfg.Config}
	s.mu.Lock()
	s.unpacked[digest] = out
	s.mu.Unlock()
	return out, nil
}

// untar writes a flattened image into dir. Every entry is written through an os.Root, so
// a hostile layer (an entry "../x", or one behind a symbolic link it planted) cannot
// write outside dir.
func untar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")
		if rel == "" {
			continue
		}
		if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		if h.Mode&0o1000 != 0 {
			mode |= fs.ModeSticky // /tmp
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, mode&fs.ModePerm); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		case tar.TypeReg:
			f, err := root.OpenFile(rel, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode&fs.ModePerm)
			if err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, rel); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		case tar.TypeLink:
			target := strings.TrimPrefix(filepath.Clean("/"+h.Linkname), "/")
			if err := root.Link(target, rel); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		default:
			continue // devices and fifos have no place in an image the testbed runs
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := root.Lchown(rel, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			// MkdirAll and OpenFile apply the umask; the image's mode is what counts.
			if err := root.Chmod(rel, mode); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
}
