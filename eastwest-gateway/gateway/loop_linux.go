//go:build linux

package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data path is one event loop per processor over epoll, as nginx and HAProxy do it,
// rather than goroutines over Go's net package: a gateway connection is short work spread
// over many small events (accept, ClientHello, connect, a few handshake records each way,
// close), and waking goroutines for each of them cost about three times the CPU nginx
// spends per connection. The loops share the listening socket (EPOLLEXCLUSIVE wakes one),
// keep each connection pair they accept, and make only non-blocking system calls besides
// epoll_wait, as raw system calls, so that the Go scheduler stays out of the way; while
// there is traffic, epoll_wait is made raw too (see wait). The loops are meant to have
// their process to themselves, as in the eastwest-gateway binary: other goroutines of the
// process run when a loop yields, every yieldEvery, or once the traffic stops.
//
// Bytes are read into one buffer per loop and written on at once, which suits the small
// records of handshakes and requests. A direction whose read fills the whole buffer is in
// a bulk transfer: while it lasts, its bytes go from socket to socket through a pipe of
// its own with splice(2), never through the gateway's memory.

const (
	// idleAfter is how long after its last event a loop keeps its processor while it
	// waits; yieldEvery is how often such a loop lets the process's other goroutines run
	// (the xDS client, metrics, the collector).
	idleAfter  = time.Second
	yieldEvery = 4 * time.Millisecond
	// chunk is how much one read moves.
	chunk = 64 << 10
)

// chunks holds the buffers of directions whose destination is slower than their source.
var chunks = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// Serve accepts connections on ln (a TCP listener) until ctx ends; then it stops
// accepting and lets the connections in progress finish for up to drain, and closes what
// is left.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return fmt.Errorf("the gateway serves TCP listeners, not %T", ln)
	}
	f, err := tl.File() // our own descriptor of the listening socket
	if err != nil {
		return err
	}
	defer f.Close()
	lfd := int(f.Fd())
	if err := unix.SetNonblock(lfd, true); err != nil {
		return err
	}
	setNoDelay(lfd) // accepted connections inherit it
	loops := make([]*loop, runtime.GOMAXPROCS(0))
	for i := range loops {
		l, err := newLoop(g, lfd)
		if err != nil {
			for _, l := range loops[:i] {
				l.close()
			}
			return err
		}
		loops[i] = l
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		// Stop listening now (new connections are refused), while the loops may still be
		// in accept on our descriptor of the socket.
		_ = unix.Shutdown(lfd, unix.SHUT_RD)
		ln.Close()
		for _, l := range loops {
			l.signal()
		}
	})
	errs := make(chan error, len(loops))
	for _, l := range loops {
		go func() { errs <- l.run(ctx, drain, len(loops)) }()
	}
	var all []error
	for range loops {
		all = append(all, <-errs)
	}
	// The descriptors are closed once nothing can use them any more.
	if !stop() {
		<-stopped
	}
	for _, l := range loops {
		l.close()
	}
	return errors.Join(all...)
}

// loop is one event loop and the connections it accepted.
type loop struct {
	g       *Gateway
	epfd    int
	lfd     int // the shared listening socket; -1 once the loop stopped accepting
	wake    int // eventfd: Serve asks the loop to drain
	pairs   map[int]*pair
	waiting map[*pair]struct{} // reading a ClientHello or connecting: they have a deadline
	events  []unix.EpollEvent
	scratch []byte
	// acceptAgain is when accepting resumes after the process ran out of descriptors.
	acceptAgain time.Time
	// now is when the loop last woke, the time its deadlines count from.
	now time.Time
	// closing are descriptors of finished pairs, closed once the batch of events is
	// handled: a number closed earlier could be reused by an accept in the same batch and
	// get the old connection's remaining events.
	closing []int
}

func newLoop(g *Gateway, lfd int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{g: g, epfd: epfd, lfd: lfd, wake: wake, pairs: map[int]*pair{},
		waiting: map[*pair]struct{}{}, events: make([]unix.EpollEvent, 256), scratch: make([]byte, chunk)}
	for _, reg := range []struct {
		fd     int
		events uint32
	}{{lfd, unix.EPOLLIN | unix.EPOLLEXCLUSIVE}, {wake, unix.EPOLLIN}} {
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, reg.fd, &unix.EpollEvent{Events: reg.events, Fd: int32(reg.fd)}); err != nil {
			l.close()
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return l, nil
}

func (l *loop) close() {
	unix.Close(l.wake)
	unix.Close(l.epfd)
}

func (l *loop) signal() {
	one := uint64(1)
	_, _ = unix.Write(l.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
}

// run serves events until ctx ends and the connections are drained; loops is how many
// loops the gateway runs. The clock is read once per wake: deadlines are seconds long, and
// a batch of events takes microseconds.
func (l *loop) run(ctx context.Context, drain time.Duration, loops int) error {
	var drainUntil, nextSweep, yielded, active time.Time
	l.now = time.Now()
	lastSweep, lastIdleSweep := l.now, l.now
	idleEvery := idleSweepEvery(l.g.IdleTimeout)
	procs := runtime.GOMAXPROCS(0)
	for {
		now := l.now
		// Wake for the next sweep when something waits for one.
		timeout := time.Duration(-1)
		if len(l.waiting) > 0 || !drainUntil.IsZero() || !l.acceptAgain.IsZero() {
			if !nextSweep.After(now) {
				nextSweep = now.Add(sweepEvery)
			}
			timeout = nextSweep.Sub(now)
		}
		if l.g.IdleTimeout > 0 && len(l.pairs) > 0 {
			if t := max(lastIdleSweep.Add(idleEvery).Sub(now), 0); timeout < 0 || t < timeout {
				timeout = t
			}
		}
		// A loop with traffic waits holding its processor, at most yieldEvery at a time,
		// unless the loops outnumber the processors (the runtime can lower GOMAXPROCS when
		// the container's CPU limit drops): a loop holding the only processor would keep
		// the others from their events.
		hold := now.Sub(active) < idleAfter && procs >= loops
		if now.Sub(yielded) >= yieldEvery {
			yielded = now
			procs = runtime.GOMAXPROCS(0)
			if hold {
				runtime.Gosched()
			}
		}
		if hold && (timeout < 0 || timeout > yieldEvery) {
			timeout = yieldEvery
		}
		n, errno := l.wait(timeout, hold)
		now = time.Now()
		l.now = now
		if n > 0 {
			active = now
		}
		if errno != 0 && errno != unix.EINTR {
			l.finishAll()
			return fmt.Errorf("epoll_wait: %w", errno)
		}
		woken := false // Serve asked the loops to stop
		for _, ev := range l.events[:max(n, 0)] {
			switch fd := int(ev.Fd); fd {
			case l.lfd:
				l.accept()
			case l.wake:
				var b [8]byte
				_, _ = unix.Read(l.wake, b[:])
				woken = true
			default:
				if p := l.pairs[fd]; p != nil {
					l.serve(p, fd, ev.Events)
				}
			}
		}
		l.closeFinished()
		if woken && drainUntil.IsZero() && ctx.Err() != nil {
			drainUntil = now.Add(drain)
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lfd, nil)
			l.lfd = -1
		}
		if !l.acceptAgain.IsZero() && now.After(l.acceptAgain) && l.lfd >= 0 {
			l.acceptAgain = time.Time{}
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.lfd)})
		}
		if len(l.waiting) > 0 && now.Sub(lastSweep) >= sweepEvery {
			l.sweep(now)
			l.closeFinished()
			lastSweep = now
		}
		if l.g.IdleTimeout > 0 && now.Sub(lastIdleSweep) >= idleEvery {
			l.sweepIdle(now)
			l.closeFinished()
			lastIdleSweep = now
		}
		if !drainUntil.IsZero() && (len(l.pairs) == 0 || now.After(drainUntil)) {
			l.finishAll()
			return nil
		}
	}
}

// wait waits in the kernel for events for up to timeout (forever if negative). Holding,
// the loop keeps its processor while it waits (a raw system call), so that an event is
// handled at once, as in nginx's loop, with no scheduler in between; otherwise the wait is
// a blocking system call whose processor the runtime may give to other goroutines, which
// costs a hand-off at the next event but nothing while the gateway is idle. Waiting in
// Go's poller on the epoll descriptor instead adds two epoll_wait calls and a goroutine
// wake to every batch (docs/performance.md has the figures).
func (l *loop) wait(timeout time.Duration, hold bool) (int, unix.Errno) {
	ms := uintptr((timeout + time.Millisecond - 1) / time.Millisecond) // rounded up: no spinning before a sweep
	if timeout < 0 {
		ms = ^uintptr(0) // -1
	}
	call := unix.Syscall6
	if hold {
		call = unix.RawSyscall6
	}
	r, _, errno := call(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), ms, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}
