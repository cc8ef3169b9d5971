package podnode

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// maxBackOff caps the restart and pull back-off, as the kubelet's does; a container that
// ran this long without failing starts its back-off over.
const (
	maxBackOff   = 5 * time.Minute
	backOffReset = 10 * time.Minute
)

// container runs one container of a pod: pulls its image, starts it, probes it, restarts
// it as its policy says, and keeps its ContainerStatus (guarded by the pod's lock).
type container struct {
	pod    *podRun
	spec   *corev1.Container
	index  int
	isInit bool // an init container (a regular one, or a sidecar)
	dir    string

	status corev1.ContainerStatus
}

// restarts tells whether a container that exited with code is started again.
func (c *container) restarts(code int32) bool {
	if c.isInit && isSidecar(c.spec) {
		return true
	}
	policy := c.pod.spec().RestartPolicy
	if c.isInit && policy == corev1.RestartPolicyAlways {
		policy = corev1.RestartPolicyOnFailure // an init container that succeeded is done
	}
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

// grace is how long a stop waits between SIGTERM and SIGKILL: the pod's termination grace
// period, set before any container is told to stop.
func (c *container) grace() time.Duration {
	c.pod.mu.Lock()
	defer c.pod.mu.Unlock()
	return c.pod.grace
}

// update changes the container's status under the pod's lock and reports the pod's.
func (c *container) update(f func(s *corev1.ContainerStatus)) {
	c.pod.mu.Lock()
	f(&c.status)
	c.pod.mu.Unlock()
	c.pod.changed()
}

func (c *container) setWaiting(reason, message string) {
	c.update(func(s *corev1.ContainerStatus) {
		s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		s.Ready, s.Started = false, ptr.To(false)
	})
}

// run keeps the container going until ctx ends or it exits for good, and returns its last
// exit code.
func (c *container) run(ctx context.Context) int32 {
	failures := 0
	for restart := int32(0); ; {
		code, ran, err := c.runOnce(ctx, restart)
		if ran > 0 {
			restart++
		}
		if ctx.Err() != nil {
			return code
		}
		if err == nil && !c.restarts(code) {
			return code
		}
		if ran >= backOffReset {
			failures = 0
		}
		delay := backOff(c.pod.node.crashBackOff, failures)
		failures++
		var pullErr *errPull
		switch {
		case errors.As(err, &pullErr):
			msg := fmt.Sprintf("Back-off pulling image %q: %v", c.spec.Image, pullErr.err)
			c.setWaiting("ImagePullBackOff", msg)
			c.pod.event(corev1.EventTypeNormal, "BackOff", msg)
		case err != nil:
			c.pod.event(corev1.EventTypeWarning, "BackOff", fmt.Sprintf("Back-off restarting failed container %s: %v", c.spec.Name, err))
		default:
			msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", delay, c.spec.Name, c.pod.name())
			c.update(func(s *corev1.ContainerStatus) {
				s.LastTerminationState = s.State
				s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: msg}}
				s.Ready, s.Started = false, ptr.To(false)
			})
			c.pod.event(corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container "+c.spec.Name)
		}
		select {
		case <-ctx.Done():
			return code
		case <-time.After(delay):
		}
	}
}

// backOff is the kubelet's doubling delay, from base up to maxBackOff.
func backOff(base time.Duration, failures int) time.Duration {
	d := base
	for range failures {
		d *= 2
		if d >= maxBackOff {
			return maxBackOff
		}
	}
	return d
}

// runOnce pulls, starts and waits for instance restart of the container. err is set when
// the instance could not start (its status then says why); ran is how long it ran.
func (c *container) runOnce(ctx context.Context, restart int32) (code int32, ran time.Duration, err error) {
	img, err := c.pod.node.images.get(ctx, c.spec.Image, c.spec.ImagePullPolicy)
	if err != nil {
		c.setWaiting("ErrImagePull", err.Error())
		c.pod.event(corev1.EventTypeWarning, "Failed", err.Error())
		return 0, 0, err
	}
	if ctx.Err() != nil {
		return 0, 0, ctx.Err() // deleted while the image was pulled: nothing to start
	}
	cmd, logs, err := c.start(ctx, img, restart)
	if err != nil {
		c.setWaiting("CreateContainerConfigError", err.Error())
		c.pod.event(corev1.EventTypeWarning, "Failed", fmt.Sprintf("Error: %v", err))
		return 0, 0, err
	}
	started := metav1.Now()
	c.update(func(s *corev1.ContainerStatus) {
		s.RestartCount = restart
		s.Image, s.ImageID = c.spec.Image, img.ID
		s.ContainerID = fmt.Sprintf("process://%d", cmd.Process.Pid)
		s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
		s.Started = ptr.To(c.spec.StartupProbe == nil)
		s.Ready = false
	})
	c.pod.event(corev1.EventTypeNormal, "Started", "Started container "+c.spec.Name)

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		logs.Wait()
		close(exited)
	}()
	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		c.probe(probeCtx, cmd.Process)
	}()
	select {
	case <-exited:
	case <-ctx.Done():
		c.stop(cmd.Process, c.grace(), exited)
	}
	stopProbes()
	<-probesDone
	code, reason := exitCode(cmd.ProcessState, waitErr)
	finished := metav1.Now()
	c.update(func(s *corev1.ContainerStatus) {
		s.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: started, FinishedAt: finished,
			ContainerID: s.ContainerID,
		}}
		s.Ready, s.Started = false, ptr.To(false)
	})
	return code, max(finished.Sub(started.Time), time.Nanosecond), nil
}

// stop ends the process as a kubelet does: SIGTERM, then SIGKILL once grace is over.
func (c *container) stop(p *os.Process, grace time.Duration, exited <-chan struct{}) {
	c.pod.event(corev1.EventTypeNormal, "Killing", "Stopping container "+c.spec.Name)
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return
	case <-time.After(grace):
	}
	_ = p.Kill()
	<-exited
}

// exitCode is the container's exit code and reason; a signal is 128+signal.
func exitCode(ps *os.ProcessState, waitErr error) (int32, string) {
	if ps == nil {
		return 128, "Error: " + fmt.Sprint(waitErr)
	}
	code := int32(ps.ExitCode())
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int32(ws.Signal())
	}
	if code == 0 {
		return 0, "Completed"
	}
	return code, "Error"
}

// logWriter copies a container's output into its log file, a line at a time in the CRI
// format ("<RFC 3339 time> <stream> F <line>").
type logWriter struct {
	file *os.File
	mu   sync.Mutex
	wg   sync.WaitGroup
}

func (l *logWriter) copy(stream string, r io.ReadCloser) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				l.mu.Lock()
				fmt.Fprintf(l.file, "%s %s F %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, strings.TrimSuffix(line, "\n"))
				l.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
}

// Wait returns once both streams are at their end, and closes the file.
func (l *logWriter) Wait() {
	l.wg.Wait()
	l.file.Close()
}

// start launches instance restart of the container through the init.
func (c *container) start(ctx context.Context, img *image, restart int32) (*exec.Cmd, *logWriter, error) {
	spec, err := c.initSpec(ctx, img, restart)
	if err != nil {
		return nil, nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	instance := filepath.Join(c.dir, strconv.Itoa(int(restart)))
	specPath := filepath.Join(instance, "init.json")
	if err := os.WriteFile(specPath, raw, 0o600); err != nil {
		return nil, nil, err
	}
	logFile, err := os.OpenFile(c.logPath(restart), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(c.pod.node.self, InitCommand, specPath)
	cmd.Env = []string{}
	// A mount namespace for its root, a UTS namespace for the pod's host name.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	logs := &logWriter{file: logFile}
	logs.copy("stdout", stdout)
	logs.copy("stderr", stderr)
	return cmd, logs, nil
}

func (c *container) logPath(restart int32) string {
	return filepath.Join(c.dir, fmt.Sprintf("%d.log", restart))
}

// initSpec is what the init of instance restart does: the image's root with the pod's
// volumes and files, the command, environment and user the pod spec and image say.
func (c *container) initSpec(ctx context.Context, img *image, restart int32) (*initSpec, error) {
	instance := filepath.Join(c.dir, strconv.Itoa(int(restart)))
	s := &initSpec{
		Netns: c.pod.sandbox.netnsPath(),
		Lower: img.Rootfs,
		Upper: filepath.Join(instance, "upper"),
		Work:  filepath.Join(instance, "work"),
		Root:  filepath.Join(instance, "root"),
		Dir:   c.spec.WorkingDir,

		Hostname: c.pod.hostname(),
	}
	for _, d := range []string{s.Upper, s.Work, s.Root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if s.Dir == "" {
		s.Dir = img.Config.WorkingDir
	}
	pod := c.pod.spec()
	env, err := c.pod.node.env.resolve(ctx, c.pod.pod, c.spec, c.pod.sandbox.ip.String())
	if err != nil {
		return nil, err
	}
	s.Env = containerEnv(img.Config.Env, env, c.pod.hostname())
	s.Args = commandLine(img.Config, c.spec, s.Env)
	if len(s.Args) == 0 {
		return nil, errors.New("no command: neither the container nor its image gives one")
	}
	uid, gid, err := credentials(img, pod.SecurityContext, c.spec.SecurityContext)
	if err != nil {
		return nil, err
	}
	s.UID, s.GID = uid, gid
	if psc := pod.SecurityContext; psc != nil {
		for _, g := range psc.SupplementalGroups {
			s.Groups = append(s.Groups, uint32(g))
		}
		if psc.FSGroup != nil {
			s.Groups = append(s.Groups, uint32(*psc.FSGroup))
		}
	}
	mounted := map[string]bool{}
	for _, m := range c.spec.VolumeMounts {
		src, ok := c.pod.volumes.paths[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %s: no volume %q", m.MountPath, m.Name)
		}
		file := false
		if m.SubPath != "" {
			clean := filepath.Clean(m.SubPath)
			if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil, fmt.Errorf("volume mount %s: subPath %q leaves the volume", m.MountPath, m.SubPath)
			}
			src = filepath.Join(src, clean)
			if st, err := os.Lstat(src); err == nil && !st.IsDir() {
				file = st.Mode().IsRegular()
			} else if err != nil {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, err
				}
			}
			if st, err := os.Lstat(src); err != nil || st.Mode()&os.ModeSymlink != 0 {
				return nil, fmt.Errorf("volume mount %s: subPath %q is not a file or directory of the volume", m.MountPath, m.SubPath)
			}
		}
		s.Mounts = append(s.Mounts, bindMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly, File: file})
		mounted[filepath.Clean(m.MountPath)] = true
	}
	for _, f := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
		if !mounted[f] {
			s.Mounts = append(s.Mounts, bindMount{Source: filepath.Join(c.pod.dir, "etc", filepath.Base(f)), Target: f, ReadOnly: true, File: true})
		}
	}
	return s, nil
}

// containerEnv is the image's environment overridden by the container's (resolved) one,
// with HOSTNAME as a runtime sets it.
func containerEnv(image []string, env []corev1.EnvVar, hostname string) []string {
	var out []string
	index := map[string]int{}
	set := func(k, v string) {
		if i, ok := index[k]; ok {
			out[i] = k + "=" + v
			return
		}
		index[k] = len(out)
		out = append(out, k+"="+v)
	}
	set("HOSTNAME", hostname)
	for _, kv := range image {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, e := range env {
		set(e.Name, e.Value)
	}
	return out
}

// commandLine applies Kubernetes' rules: command replaces the image's entrypoint (and
// drops its cmd), args replace its cmd; $(VAR) expands from the environment.
func commandLine(img imageConfig, c *corev1.Container, env []string) []string {
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(append(argv, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append(argv, img.Entrypoint...), c.Args...)
	default:
		argv = append(append(argv, img.Entrypoint...), img.Cmd...)
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	for i, a := range argv {
		argv[i] = expand(a, vars)
	}
	return argv
}

// expand replaces $(VAR) with its value where VAR is set; $$ is a literal $.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
					i += end + 2
					continue
				}
			}
		}
		b.WriteByte('$')
	}
	return b.String()
}
