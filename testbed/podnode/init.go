package podnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitCommand is the argument that makes the node binary act as a container's init: the
// provider starts `<node binary> container-init <spec file>` in a new mount namespace, and
// the init joins the pod's network namespace, assembles the root file system, drops to
// the container's user and executes the entrypoint in its place.
const InitCommand = "container-init"

// initSpec is everything the init needs, written by the provider as JSON.
type initSpec struct {
	// Netns is the path of the pod's network namespace.
	Netns string
	// Lower is the unpacked image (shared, never written); Upper and Work are the
	// container's own overlay directories; Root is where the overlay is mounted.
	Lower, Upper, Work, Root string
	// Mounts are bind mounts into Root, in order.
	Mounts []bindMount
	// Args is the command line; Args[0] is looked up on the PATH of Env unless it holds a
	// slash.
	Args []string
	Env  []string
	// Dir is the working directory inside the container.
	Dir string
	// Hostname is the pod's host name, set in the container's UTS namespace.
	Hostname string
	// UID, GID and Groups are the credentials the entrypoint runs with.
	UID, GID uint32
	Groups   []uint32
}

// bindMount is one volume (or pod file such as /etc/hosts) seen inside the container.
type bindMount struct {
	Source, Target string
	ReadOnly       bool
	// File is set when Source is a file: the target is created as an empty file.
	File bool
}

// RunInit is the container init; it never returns on success. Failures are written to
// stderr (the container's log) and end the process with 127, as a runtime's would.
func RunInit(specPath string) {
	if err := runInit(specPath); err != nil {
		fmt.Fprintf(os.Stderr, "container init: %v\n", err)
		os.Exit(127)
	}
}

func runInit(specPath string) error {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var s initSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("read %s: %w", specPath, err)
	}
	// Namespaces and the root belong to the thread; exec replaces the process from it.
	runtime.LockOSThread()
	if err := joinNetns(s.Netns); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
		return fmt.Errorf("host name: %w", err)
	}
	// Nothing mounted from here on may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.Lower, s.Upper, s.Work)
	if err := unix.Mount("overlay", s.Root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount the image root: %w", err)
	}
	root, err := os.OpenRoot(s.Root)
	if err != nil {
		return err
	}
	if err := mountSystem(root); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		if err := bind(root, m); err != nil {
			return err
		}
	}
	root.Close()
	if err := unix.Chroot(s.Root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("working directory %s: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("working directory %s: %w", dir, err)
	}
	path, err := lookPath(s.Args[0], s.Env)
	if err != nil {
		return err
	}
	groups := make([]int, len(s.Groups))
	for i, g := range s.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(s.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", s.GID, err)
	}
	if err := syscall.Setuid(int(s.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", s.UID, err)
	}
	// Changing credentials clears the parent-death signal: the container must still die
	// with its node.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	if err := syscall.Exec(path, s.Args, s.Env); err != nil {
		return fmt.Errorf("exec %s: %w", s.Args[0], err)
	}
	return nil
}

func joinNetns(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join network namespace: %w", err)
	}
	return nil
}

// mountSystem gives the container /proc, a /dev with the usual character devices and a
// read-only /sys, as a runtime does.
func mountSystem(root *os.Root) error {
	mounts := []struct {
		dir, fstype, data string
		flags             uintptr
	}{
		{"proc", "proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sys", "sysfs", "", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"dev", "tmpfs", "mode=755,size=65536k", unix.MS_NOSUID},
	}
	for _, m := range mounts {
		if err := mountAt(root, m.dir, false, func(target string) error {
			return unix.Mount(m.fstype, target, m.fstype, m.flags, m.data)
		}); err != nil {
			return fmt.Errorf("mount /%s: %w", m.dir, err)
		}
	}
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bind(root, bindMount{Source: "/dev/" + dev, Target: "/dev/" + dev, File: true}); err != nil {
			return err
		}
	}
	if err := root.Mkdir("dev/shm", 0o777); err != nil {
		return err
	}
	return root.Chmod("dev/shm", 0o777|os.ModeSticky)
}

// bind mounts m.Source at m.Target inside root.
func bind(root *os.Root, m bindMount) error {
	err := mountAt(root, m.Target, m.File, func(target string) error {
		return unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, "")
	})
	if err == nil && m.ReadOnly {
		// The mount point's descriptor still names what lies under the new mount: the
		// remount goes through a descriptor opened after it.
		err = mountAt(root, m.Target, m.File, func(target string) error {
			return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
		})
	}
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Target, err)
	}
	return nil
}

// mountAt creates the mount point path (a directory, or an empty file) inside root and
// calls mount with a path to it. The point is created and opened through root and
// mounted through its open descriptor, so a symbolic link in the image cannot put a
// mount point, or a mount, on the host.
func mountAt(root *os.Root, path string, file bool, mount func(target string) error) error {
	rel := strings.TrimPrefix(filepath.Clean("/"+path), "/")
	if rel == "" {
		return errors.New("cannot mount over the container's root")
	}
	var f *os.File
	var err error
	if file {
		if err = root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
			return err
		}
		f, err = root.OpenFile(rel, os.O_CREATE|os.O_RDONLY, 0o644)
	} else {
		if err = root.MkdirAll(rel, 0o755); err != nil {
			return err
		}
		f, err = root.Open(rel)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return mount(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}

// lookPath finds name on the container's PATH, inside the new root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %s", name, path)
}
