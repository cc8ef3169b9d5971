//go:build linux

package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/meshfed/meshfed/eastwest-gateway/sni"
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
	// sweepEvery is how often a loop looks for ClientHello and connect deadlines.
	sweepEvery = 50 * time.Millisecond
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
	lastSweep := l.now
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

// pair is a client connection and, once routed, its backend connection.
type pair struct {
	client, backend int // -1: none
	phase           phase
	deadline        time.Time
	hello           []byte // what the client sent before it was routed
	helloEOF        bool
	name            string
	up, down        direction // client → backend, backend → client
	clientWrites    bool      // the client socket is watched for room to write
}

type phase int

const (
	readingHello phase = iota
	connecting
	proxying
)

// direction is one way of a pair: bytes read from one side not yet written to the other,
// and whether the source ended and the end was passed on.
type direction struct {
	pending []byte
	owned   *[]byte // the pooled buffer pending lives in, if any
	// pipe carries the bytes of a bulk transfer from socket to socket without copying
	// them (splice); what it holds is pending too. bulk: the last read filled a whole
	// chunk, so the next goes through the pipe; once one moves less, reads take over
	// again (a long-lived connection's small messages cost a system call less that way).
	pipe *pipe
	bulk bool
	// readable: the source may have bytes to read (it had an event since the last read
	// that left its buffer empty); hangup: the source's peer finished sending.
	readable, hangup bool
	eof, shut        bool
	bytes, spliced   int64
}

func (d *direction) done() bool { return d.eof && d.shut && !d.holds() }

// holds tells whether bytes read from the source wait to be written to the destination.
func (d *direction) holds() bool { return len(d.pending) > 0 || (d.pipe != nil && d.pipe.n > 0) }

// pipe is a kernel buffer between two sockets: splice moves the pages of a socket's
// receive queue into it and from it into the other socket's send queue, so a bulk
// transfer is not copied through the gateway's memory.
type pipe struct {
	r, w int
	n    int // bytes in it
}

// openPipe gives the direction its pipe, made once for the connection's life; it is false
// when none can be had (out of descriptors, say): the direction then goes on with reads
// and writes.
func (d *direction) openPipe() bool {
	if d.pipe == nil {
		var fds [2]int32
		_, _, errno := unix.RawSyscall(unix.SYS_PIPE2, uintptr(unsafe.Pointer(&fds)), unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if errno != 0 {
			return false
		}
		d.pipe = &pipe{r: int(fds[0]), w: int(fds[1])}
	}
	return true
}

func (p *pipe) close() {
	closeFD(p.r)
	closeFD(p.w)
}

// readableOn notes what an event on the direction's source says.
func (d *direction) readableOn(events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		d.readable = true
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		d.hangup = true
	}
}

// accept takes one connection per event, as nginx does by default: the listening socket
// is level-triggered, so the next one comes with the next event (possibly in another
// loop), and no accept is spent learning that there is none.
func (l *loop) accept() {
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	switch errno {
	case 0:
	case unix.EAGAIN, unix.ECONNABORTED, unix.EINTR, unix.EBADF, unix.EINVAL:
		return // another loop took it, the client left, or the listener is closed
	default:
		// Out of descriptors or memory: the socket stays readable, so pause accepting
		// rather than spin, and let connections finish meanwhile.
		l.g.Log.Error(errno, "accept: pausing new connections for a second")
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lfd, nil)
		l.acceptAgain = l.now.Add(time.Second)
		return
	}
	// The ClientHello is read on the connection's first event: most often it has not
	// arrived yet, and if it has, adding the socket to epoll reports it at once.
	p := &pair{client: int(fd), backend: -1, deadline: l.now.Add(l.g.HelloTimeout)}
	if err := l.add(p.client, p, clientEvents); err != nil {
		closeFD(p.client)
		l.g.Log.Error(err, "epoll_ctl")
		return
	}
	l.waiting[p] = struct{}{}
	l.g.metrics.active.Inc()
}

// Sockets are watched edge-triggered. A client socket is not watched for room to write
// until a write to it is left over (see check): it has room from the start, and an event
// saying so would cost a wake per connection. A backend socket is, since that event is how
// its connect completes.
const (
	clientEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET
	backendEvents = clientEvents | unix.EPOLLOUT
)

func (l *loop) add(fd int, p *pair, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	l.pairs[fd] = p
	return nil
}

func (l *loop) serve(p *pair, fd int, events uint32) {
	switch p.phase {
	case readingHello:
		p.up.readableOn(events)
		l.readHello(p)
	case connecting:
		if fd == p.client {
			p.up.readableOn(events) // read once connected
		} else {
			p.down.readableOn(events)
		}
		if fd != p.backend || events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		// EPOLLOUT alone is a connection made; an error or hang-up may be a connect that
		// failed, or a backend that accepted and closed at once (which moving shows).
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			if errno := socketError(fd); errno != 0 {
				l.refuse(p, ReasonDialFailed, errno)
				return
			}
		}
		l.connected(p)
	case proxying:
		// Only the ways this event can move: what fd has to read, and what waits to be
		// written to fd once it takes more.
		from, to := &p.up, &p.down // from reads fd, to writes to fd
		src, dst := p.client, p.backend
		if fd == p.backend {
			from, to, src, dst = to, from, dst, src
		}
		from.readableOn(events)
		var errs [2]error
		if from.readable || from.holds() {
			errs[0] = l.move(src, dst, from, to)
		}
		if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && to.holds() {
			errs[1] = l.move(dst, src, to, from)
		}
		// A socket in error (the peer reset it) takes nothing more: end the pair now rather
		// than when the other side next has something for it. Bytes it sent that still wait
		// to be passed on go first; the read after them reports the reset.
		if events&unix.EPOLLERR != 0 && errs[0] == nil && errs[1] == nil && !from.holds() {
			if errno := socketError(fd); errno != 0 {
				errs[0] = errno
			}
		}
		l.check(p, errs[0], errs[1])
	}
}

// helloLimit bounds what is read before routing: the ClientHello and its record headers.
func (l *loop) helloLimit() int { return l.g.MaxHello + 1024 }

// readHello reads what the client sent and routes it once it holds a whole ClientHello.
func (l *loop) readHello(p *pair) {
	for p.up.readable && !p.helloEOF && len(p.hello) < l.helloLimit() {
		want := min(len(l.scratch), l.helloLimit()-len(p.hello))
		n, errno := read(p.client, l.scratch[:want])
		if errno == unix.EAGAIN {
			p.up.readable = false
			break
		}
		if errno != 0 {
			l.refuse(p, ReasonReadFailed, errno)
			return
		}
		if n == 0 {
			p.helloEOF = true
			break
		}
		p.hello = append(p.hello, l.scratch[:n]...)
		if n < want {
			// A short read empties the socket: more comes with an event, or, if the client
			// hung up, never.
			p.up.readable, p.helloEOF = false, p.up.hangup
		}
	}
	name, err := sni.Parse(p.hello, l.g.MaxHello)
	more := errors.Is(err, sni.ErrTruncated) || errors.Is(err, io.EOF)
	switch {
	case more && !p.helloEOF && len(p.hello) < l.helloLimit():
		return // wait for the rest
	case more && !p.helloEOF:
		l.refuse(p, ReasonTooLarge, err)
	case err != nil:
		l.refuse(p, helloReason(err), err)
	default:
		p.name = name
		l.route(p)
	}
}

// route connects the pair to a backend of its server name.
func (l *loop) route(p *pair) {
	t := l.g.table.Load()
	backend, ok := t.Lookup(p.name)
	switch {
	case t == nil:
		l.refuse(p, ReasonNoConfig, nil)
		return
	case !ok && t.Routed(p.name):
		l.refuse(p, ReasonNoEndpoints, nil)
		return
	case !ok:
		l.refuse(p, ReasonUnknownSNI, nil)
		return
	}
	ap, err := netip.ParseAddrPort(backend)
	if err != nil {
		l.refuse(p, ReasonDialFailed, err)
		return
	}
	fd, errno := connect(ap)
	if errno != 0 && errno != unix.EINPROGRESS {
		l.refuse(p, ReasonDialFailed, errno)
		return
	}
	if err := l.add(fd, p, backendEvents); err != nil {
		closeFD(fd)
		l.refuse(p, ReasonDialFailed, err)
		return
	}
	p.backend, p.phase, p.deadline = fd, connecting, l.now.Add(l.g.DialTimeout)
	// The ClientHello, and anything the client sent after it, go to the backend first.
	p.up.pending, p.hello = p.hello, nil
	p.up.eof = p.helloEOF
	if errno == 0 {
		l.connected(p)
	}
}

func (l *loop) connected(p *pair) {
	p.phase = proxying
	delete(l.waiting, p)
	l.g.metrics.routed(p.name)
	l.check(p, l.move(p.client, p.backend, &p.up, &p.down), l.move(p.backend, p.client, &p.down, &p.up))
}

// check ends the pair when a way failed or both ended; otherwise, once bytes wait for the
// client, it has its socket report room to write. (Changing the events of an edge-triggered
// socket reports what is ready then, so room made meanwhile is not missed.)
func (l *loop) check(p *pair, errUp, errDown error) {
	if errUp != nil || errDown != nil || (p.up.done() && p.down.done()) {
		l.finish(p)
		return
	}
	if p.down.holds() && !p.clientWrites {
		ev := unix.EpollEvent{Events: clientEvents | unix.EPOLLOUT, Fd: int32(p.client)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, p.client, &ev); err != nil {
			l.g.Log.Error(err, "epoll_ctl")
			l.finish(p)
			return
		}
		p.clientWrites = true
	}
}

// move copies from src to dst while src has bytes and dst takes them (edge-triggered: the
// next event on either resumes it). When src ends, dst is shut for writing, so that a
// half-closed connection stays half-closed through the gateway, unless the other way
// ended already and the pair is about to close.
func (l *loop) move(src, dst int, d, other *direction) error {
	for {
		for len(d.pending) > 0 {
			n, errno := send(dst, d.pending)
			if errno == unix.EAGAIN {
				return nil
			}
			if errno != 0 {
				return errno
			}
			d.pending = d.pending[n:]
		}
		if d.owned != nil {
			chunks.Put(d.owned)
			d.owned = nil
		}
		for d.pipe != nil && d.pipe.n > 0 {
			n, errno := splice(d.pipe.r, dst, d.pipe.n)
			if errno == unix.EAGAIN {
				return nil
			}
			if errno != 0 {
				return errno
			}
			d.pipe.n -= n
		}
		if d.eof {
			if !d.shut {
				d.shut = true
				if !other.done() {
					if errno := shutdownWrite(dst); errno != 0 && errno != unix.ENOTCONN {
						return errno
					}
				}
			}
			return nil
		}
		if !d.readable {
			return nil
		}
		// Into the pipe while the transfer is bulk, else into the loop's buffer. The pipe is
		// empty here, so only an empty source makes a splice wait; a short splice does not
		// say the source is empty (a pipe holds a number of pages, not of bytes): the read
		// after it will.
		var n int
		var errno unix.Errno
		if d.bulk {
			n, errno = splice(src, d.pipe.w, chunk)
		} else {
			n, errno = read(src, l.scratch)
		}
		switch {
		case errno == unix.EAGAIN:
			d.readable = false
			return nil
		case errno != 0:
			return errno
		case n == 0:
			d.eof = true
			continue
		}
		d.bytes += int64(n)
		if d.bulk {
			d.pipe.n += n
			d.spliced += int64(n)
			d.bulk = n == chunk
			continue
		}
		if n < len(l.scratch) {
			// A short read empties the socket: more comes with an event, or, if the peer
			// hung up, never.
			d.readable, d.eof = false, d.hangup
		}
		w, errno := send(dst, l.scratch[:n])
		if errno != 0 && errno != unix.EAGAIN {
			return errno
		}
		if w < n { // dst is full: keep the rest until it drains
			d.owned = chunks.Get().(*[]byte)
			d.pending = append((*d.owned)[:0], l.scratch[max(w, 0):n]...)
		} else if n == len(l.scratch) {
			d.bulk = d.openPipe()
		}
	}
}

func (l *loop) refuse(p *pair, reason string, err error) {
	l.g.metrics.refused(reason)
	l.g.Log.V(1).Info("connection refused", "reason", reason, "serverName", p.name, "error", err)
	l.finish(p)
}

// finish closes both connections of a pair.
func (l *loop) finish(p *pair) {
	for _, fd := range []int{p.client, p.backend} {
		if fd >= 0 {
			delete(l.pairs, fd)
			l.closing = append(l.closing, fd)
		}
	}
	for _, d := range []*direction{&p.up, &p.down} {
		if d.owned != nil {
			chunks.Put(d.owned)
			d.owned, d.pending = nil, nil
		}
		if d.pipe != nil {
			d.pipe.close()
			d.pipe = nil
		}
	}
	p.client, p.backend = -1, -1
	delete(l.waiting, p)
	l.g.metrics.active.Dec()
	l.g.metrics.bytesIn.Add(float64(p.up.bytes))
	l.g.metrics.bytesOut.Add(float64(p.down.bytes))
	if n := p.up.spliced + p.down.spliced; n > 0 {
		l.g.metrics.spliced.Add(float64(n))
	}
}

func (l *loop) closeFinished() {
	for _, fd := range l.closing {
		closeFD(fd) // also leaves the epoll set
	}
	l.closing = l.closing[:0]
}

func (l *loop) finishAll() {
	seen := map[*pair]bool{}
	for _, p := range l.pairs {
		if !seen[p] {
			seen[p] = true
			l.finish(p)
		}
	}
	l.closeFinished()
}

// sweep refuses the pairs whose ClientHello or connect took too long.
func (l *loop) sweep(now time.Time) {
	for p := range l.waiting {
		if now.Before(p.deadline) {
			continue
		}
		if p.phase == readingHello {
			l.refuse(p, ReasonTimeout, os.ErrDeadlineExceeded)
		} else {
			l.refuse(p, ReasonDialFailed, os.ErrDeadlineExceeded)
		}
	}
}

// The system calls of the data path never block (every socket is non-blocking), so they
// are made raw: no scheduler hand-off around them.

func read(fd int, b []byte) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), errno
}

func send(fd int, b []byte) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// splice moves up to n bytes from in to out, one of which is a pipe, without copying them.
func splice(in, out, n int) (int, unix.Errno) {
	r, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

func shutdownWrite(fd int) unix.Errno {
	_, _, errno := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errno
}

func setNoDelay(fd int) {
	one := int32(1)
	_, _, _ = unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

// socketError is the outcome of a non-blocking connect.
func socketError(fd int) unix.Errno {
	var v int32
	size := uint32(4)
	_, _, errno := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return errno
	}
	return unix.Errno(v)
}

// connect opens a non-blocking TCP socket to ap and starts connecting (EINPROGRESS).
func connect(ap netip.AddrPort) (int, unix.Errno) {
	family := unix.AF_INET6
	if ap.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	setNoDelay(int(fd))
	var sa unsafe.Pointer
	var size uintptr
	port := [2]byte{byte(ap.Port() >> 8), byte(ap.Port())} // network order
	if family == unix.AF_INET {
		raw := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().Unmap().As4()}
		raw.Port = *(*uint16)(unsafe.Pointer(&port))
		sa, size = unsafe.Pointer(raw), unsafe.Sizeof(*raw)
	} else {
		raw := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		raw.Port = *(*uint16)(unsafe.Pointer(&port))
		sa, size = unsafe.Pointer(raw), unsafe.Sizeof(*raw)
	}
	_, _, errno = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(sa), size)
	if errno != 0 && errno != unix.EINPROGRESS {
		closeFD(int(fd))
		return -1, errno
	}
	return int(fd), errno
}

func closeFD(fd int) { _, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }
