package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one child of the testbed. It runs in its own process group, so that stop
// reaches anything it forked, and dies with the testbed even if the testbed is killed
// (Pdeathsig).
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set before done closes
}

// startProcess runs argv with its output appended to logPath.
func startProcess(name, logPath string, argv []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the process id, which is also its process group id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended, naming its log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited (%w); see %s", p.name, p.err, p.logPath)
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs the group.
// It returns once the process is reaped.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		killGroup(p.pid(), syscall.SIGKILL) // anything it left behind
		return
	}
	killGroup(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		killGroup(p.pid(), syscall.SIGKILL)
		<-p.done
	}
	killGroup(p.pid(), syscall.SIGKILL)
}

func killGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}

// processAlive reports whether a process with this pid exists and is not a zombie.
func processAlive(pid int) bool {
	fields, ok := statFields(pid)
	return ok && fields[0] != "Z"
}

// statFields are the fields of /proc/<pid>/stat after the command name, from the state
// (field 3) on; the name is left out since it may hold spaces.
func statFields(pid int) ([]string, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return nil, false
	}
	fields := strings.Fields(string(data[end+1:]))
	return fields, len(fields) > 0
}

// processGroup tracks every process the testbed started.
type processGroup struct {
	mu    sync.Mutex
	procs []*process
	pids  []int
}

func (g *processGroup) add(p *process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs = append(g.procs, p)
	g.pids = append(g.pids, p.pid())
}

// allPIDs returns the pid of every process ever started, stopped or not.
func (g *processGroup) allPIDs() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.pids...)
}

// cpuTimes returns the processor time each running process used so far, by name.
func (g *processGroup) cpuTimes() map[string]time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]time.Duration{}
	for _, p := range g.procs {
		if !p.exited() {
			if d, ok := cpuTime(p.pid()); ok {
				out[p.name] = d
			}
		}
	}
	return out
}

// cpuTime reads a process's user and system time (fields 14 and 15 of /proc/<pid>/stat,
// in the kernel's clock ticks, 100 per second on Linux).
func cpuTime(pid int) (time.Duration, bool) {
	fields, ok := statFields(pid)
	if !ok || len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * (time.Second / 100), true
}

// FreePort returns a TCP port that is free on ip now.
func FreePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Poll calls check every 50 ms until it returns nil, and returns its last error, naming
// what, once timeout passes (or ctx ends) first. Tests use Eventually, which is Poll that
// fails the test.
func Poll(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	return PollEvery(ctx, timeout, 50*time.Millisecond, what, func(context.Context) error { return check() })
}

// PollEvery is Poll with its interval, and a check that gets a context ending with the
// timeout (so that a hung request ends with it).
func PollEvery(ctx context.Context, timeout, interval time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not done after %s: %w", what, timeout, err)
		case <-time.After(interval):
		}
	}
}

// httpOK gets url and says why it is not a 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// Every calls f every interval until ctx ends.
func Every(ctx context.Context, interval time.Duration, f func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// ChildPIDs lists pid's children: every thread's list counts, since a child belongs to
// the thread that started it.
func ChildPIDs(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(children)) {
			if child, err := strconv.Atoi(f); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}
