//go:build linux

package gateway

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshfed/meshfed/eastwest-gateway/sni"
)

// A pair's life: accepted, its ClientHello read, routed to a backend, bytes moved both
// ways (move_linux.go), finished.

// pair is a client connection and, once routed, its backend connection.
type pair struct {
	client, backend int // -1: none
	phase           phase
	deadline        time.Time
	// needHello is how many bytes the client must have sent before its ClientHello can
	// be whole; until its socket holds that many, the hello is not looked at again.
	needHello int
	hello     []byte // what the client sent before it was routed
	// active is when a routed pair last had an event, for the idle timeout.
	active       time.Time
	name         string
	up, down     direction // client → backend, backend → client
	clientWrites bool      // the client socket is watched for room to write
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
//
// At the connection cap the loop stops accepting (back-pressure: connections wait in the
// listen backlog, and clients slow down as it fills) and looks again every sweep.
func (l *loop) accept() {
	if !l.g.reserve() {
		l.g.metrics.atCap.Inc()
		l.pauseAccept(l.now.Add(sweepEvery))
		return
	}
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	switch errno {
	case 0:
	case unix.EAGAIN, unix.ECONNABORTED, unix.EINTR, unix.EBADF, unix.EINVAL:
		l.g.open.Add(-1)
		return // another loop took it, the client left, or the listener is closed
	default:
		// Out of descriptors or memory: the socket stays readable, so pause accepting
		// rather than spin, and let connections finish meanwhile.
		l.g.open.Add(-1)
		l.g.Log.Error(errno, "accept: pausing new connections for a second")
		l.pauseAccept(l.now.Add(time.Second))
		return
	}
	// The ClientHello is read on the connection's first event: most often it has not
	// arrived yet, and if it has, adding the socket to epoll reports it at once.
	p := &pair{client: int(fd), backend: -1, deadline: l.now.Add(l.g.HelloTimeout)}
	if err := l.add(p.client, p, clientEvents); err != nil {
		closeFD(p.client)
		l.g.open.Add(-1)
		l.g.Log.Error(err, "epoll_ctl")
		return
	}
	l.waiting[p] = struct{}{}
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
		p.active = l.now
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

// readHello routes the client once what it sent holds a whole ClientHello. The bytes stay
// in the socket's receive buffer until then (they are peeked at, not read), so a client
// that sends part of a ClientHello and stops costs the gateway no memory of its own; and
// they are peeked at again only once enough has arrived for the records announced so far,
// so one that sends a byte at a time costs a system call per event, not a copy.
func (l *loop) readHello(p *pair) {
	if !p.up.readable {
		return
	}
	p.up.readable = false // edge-triggered: the next event says there is more
	if p.needHello > 0 && !p.up.hangup {
		if queued, errno := queuedBytes(p.client); errno != 0 {
			l.refuse(p, ReasonReadFailed, errno)
			return
		} else if queued < p.needHello {
			return
		}
	}
	n, errno := peek(p.client, l.scratch[:l.helloLimit()])
	if errno == unix.EAGAIN {
		n, errno = 0, 0
		if !p.up.hangup {
			return
		}
	}
	if errno != 0 {
		l.refuse(p, ReasonReadFailed, errno)
		return
	}
	sent := l.scratch[:n]
	name, err := sni.Parse(sent, l.g.MaxHello)
	more := errors.Is(err, sni.ErrTruncated) || errors.Is(err, io.EOF)
	switch {
	case more && !p.up.hangup && n < l.helloLimit():
		p.needHello = min(max(n+1, helloNeeds(sent)), l.helloLimit())
	case more && !p.up.hangup:
		l.refuse(p, ReasonTooLarge, err)
	case err != nil:
		l.refuse(p, helloReason(err), err)
	default:
		// Routed: what was peeked at is taken now, to go to the backend first.
		p.hello = make([]byte, n)
		if got, errno := read(p.client, p.hello); errno != 0 || got != n {
			l.refuse(p, ReasonReadFailed, errno)
			return
		}
		p.up.readable = true // anything after it is read once connected
		p.name = name
		l.route(p)
	}
}

// helloNeeds is how many bytes the TLS records that start sent announce: through the end
// of the last record whose header has arrived, or the next header.
func helloNeeds(sent []byte) int {
	off := 0
	for off+5 <= len(sent) {
		off += 5 + (int(sent[off+3])<<8 | int(sent[off+4]))
	}
	if off < len(sent) {
		return off + 5 // a header cut short
	}
	return max(off, len(sent)+1)
}

// route connects the pair to a backend of its server name.
func (l *loop) route(p *pair) {
	backend, reason := l.g.pick(p.name)
	if reason != "" {
		l.refuse(p, reason, nil)
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
	// The ClientHello, and anything the client sent with it, go to the backend first.
	p.up.pending, p.hello = p.hello, nil
	if errno == 0 {
		l.connected(p)
	}
}

func (l *loop) connected(p *pair) {
	p.phase, p.active = proxying, l.now
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
	l.g.open.Add(-1)
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

// sweepIdle closes the routed pairs that had no event for the idle timeout.
func (l *loop) sweepIdle(now time.Time) {
	for fd, p := range l.pairs {
		if fd == p.client && p.phase == proxying && now.Sub(p.active) >= l.g.IdleTimeout {
			l.g.metrics.idleClosed.Inc()
			l.g.Log.V(1).Info("idle connection closed", "serverName", p.name)
			l.finish(p)
		}
	}
}

// pauseAccept takes the listening socket out of the loop's epoll set until again.
func (l *loop) pauseAccept(again time.Time) {
	if l.acceptAgain.IsZero() {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lfd, nil)
	}
	l.acceptAgain = again
}
