package podnode

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// GetContainerLogs serves `kubectl logs`: the current instance of the container, or the
// one before it (Previous), with tail, since, timestamps, byte limit and follow.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	r := p.find(namespace, podName)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, podName)
	}
	var c *container
	for _, cand := range append(append([]*container{}, r.init...), r.main...) {
		if cand.spec.Name == containerName {
			c = cand
		}
	}
	if c == nil {
		return nil, errdefs.NotFoundf("container %s is not in pod %s/%s", containerName, namespace, podName)
	}
	r.mu.Lock()
	instance, started := c.status.RestartCount, c.status.ContainerID != ""
	waiting := c.status.State.Waiting
	r.mu.Unlock()
	if !started {
		reason := "ContainerCreating"
		if waiting != nil {
			reason = waiting.Reason
		}
		return nil, errdefs.InvalidInputf("container %q in pod %q is waiting to start: %s", containerName, podName, reason)
	}
	if opts.Previous {
		if instance == 0 {
			return nil, errdefs.InvalidInputf("previous terminated container %q in pod %q not found", containerName, podName)
		}
		instance--
		opts.Follow = false
	}
	f, err := os.Open(c.logPath(instance))
	if err != nil {
		return nil, err
	}
	// running reports whether the instance still writes to the log.
	running := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return c.status.RestartCount == instance && c.status.State.Running != nil
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		pw.CloseWithError(copyLog(ctx, f, pw, opts, running))
	}()
	return pr, nil
}

// logLine is one line of a CRI log: "<RFC 3339 time> <stream> <tag> <text>".
type logLine struct {
	time time.Time
	raw  string // the whole line, with its newline
	text string // the text, with its newline
}

func parseLogLine(raw string) (logLine, bool) {
	parts := strings.SplitN(raw, " ", 4)
	if len(parts) != 4 {
		return logLine{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, parts[0])
	if err != nil {
		return logLine{}, false
	}
	return logLine{time: t, raw: raw, text: parts[3]}, true
}

// format is the line as kubectl shows it: the text, after its time with Timestamps.
func (l logLine) format(timestamps bool) string {
	if timestamps {
		return l.time.Format(time.RFC3339Nano) + " " + l.text
	}
	return l.text
}

// copyLog writes the log as opts say; with Follow it goes on while running() holds.
func copyLog(ctx context.Context, f *os.File, w io.Writer, opts api.ContainerLogOpts, running func() bool) error {
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	written := 0
	emit := func(l logLine) (bool, error) {
		if l.time.Before(since) {
			return true, nil
		}
		s := l.format(opts.Timestamps)
		if opts.LimitBytes > 0 && written+len(s) > opts.LimitBytes {
			s = s[:opts.LimitBytes-written]
		}
		n, err := io.WriteString(w, s)
		written += n
		return opts.LimitBytes <= 0 || written < opts.LimitBytes, err
	}
	br := bufio.NewReader(f)
	// What is there now, with the tail applied.
	var lines []logLine
	partial := ""
	for {
		s, err := br.ReadString('\n')
		if errors.Is(err, io.EOF) {
			partial = s
			break
		}
		if err != nil {
			return err
		}
		if l, ok := parseLogLine(s); ok {
			lines = append(lines, l)
		}
	}
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	for _, l := range lines {
		if more, err := emit(l); err != nil || !more {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	finishing := false
	for {
		s, err := br.ReadString('\n')
		partial += s
		if err == nil {
			if l, ok := parseLogLine(partial); ok {
				if more, err := emit(l); err != nil || !more {
					return err
				}
			}
			partial = ""
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		switch {
		case finishing:
			return nil
		case !running():
			finishing = true // read once more: the instance may have written as it ended
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
