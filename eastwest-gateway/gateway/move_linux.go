//go:build linux

package gateway

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

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
