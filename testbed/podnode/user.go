package podnode

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// credentials is the user and group a container runs as: runAsUser/runAsGroup of the
// container, else of the pod, else the image's USER (numeric, or a name in the image's
// /etc/passwd), else root. runAsNonRoot refuses root.
func credentials(img *image, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) (uid, gid uint32, err error) {
	var runAsUser, runAsGroup *int64
	var nonRoot *bool
	if pod != nil {
		runAsUser, runAsGroup, nonRoot = pod.RunAsUser, pod.RunAsGroup, pod.RunAsNonRoot
	}
	if c != nil {
		if c.RunAsUser != nil {
			runAsUser = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			runAsGroup = c.RunAsGroup
		}
		if c.RunAsNonRoot != nil {
			nonRoot = c.RunAsNonRoot
		}
	}
	uid, gid, err = imageUser(img)
	if err != nil {
		return 0, 0, err
	}
	if runAsUser != nil {
		uid = uint32(*runAsUser)
	}
	if runAsGroup != nil {
		gid = uint32(*runAsGroup)
	}
	if nonRoot != nil && *nonRoot && uid == 0 {
		return 0, 0, errors.New("container has runAsNonRoot and would run as root")
	}
	return uid, gid, nil
}

// imageUser reads the image's USER: "uid", "uid:gid", "name" or "name:group".
func imageUser(img *image) (uid, gid uint32, err error) {
	user, group, hasGroup := strings.Cut(img.Config.User, ":")
	if user == "" {
		return 0, 0, nil
	}
	u, err := lookup(img.Rootfs, "passwd", user, 2)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q: %w", img.Config.User, err)
	}
	g := u
	switch {
	case hasGroup:
		if g, err = lookup(img.Rootfs, "group", group, 2); err != nil {
			return 0, 0, fmt.Errorf("image group %q: %w", group, err)
		}
	default:
		// The user's primary group, from passwd, or the uid when the user is a number.
		if gid, err := lookup(img.Rootfs, "passwd", user, 3); err == nil {
			g = gid
		}
	}
	return u, g, nil
}

// lookup finds name (or a number, as itself) in the image's /etc/<file> and returns the
// numeric field at index field.
func lookup(rootfs, file, name string, field int) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil && field == 2 {
		return uint32(n), nil
	}
	f, err := os.Open(filepath.Join(rootfs, "etc", file))
	if err != nil {
		return 0, fmt.Errorf("no /etc/%s in the image", file)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) > field && (parts[0] == name || parts[2] == name) {
			n, err := strconv.ParseUint(parts[field], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("/etc/%s: bad entry for %q", file, name)
			}
			return uint32(n), nil
		}
	}
	return 0, fmt.Errorf("%q not in the image's /etc/%s", name, file)
}
