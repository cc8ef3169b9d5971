//go:build linux

package gateway

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of the data path never block (every socket is non-blocking), so they
// are made raw: no scheduler hand-off around them.

func read(fd int, b []byte) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), errno
}

// peek copies what the socket holds, up to len(b), and leaves it there.
func peek(fd int, b []byte) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// queuedBytes is how many bytes the socket holds to be read.
func queuedBytes(fd int) (int, unix.Errno) {
	var n int32
	_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCINQ, uintptr(unsafe.Pointer(&n)))
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
