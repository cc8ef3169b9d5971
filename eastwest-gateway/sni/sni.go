// Package sni reads the server name of a TLS connection from its ClientHello without
// terminating TLS: the gateway parses what the client sent so far and, once routed,
// passes those bytes on to the backend unchanged.
//
// It must never trust what it reads: every length is checked against what is left, the
// whole ClientHello is bounded, and each failure has its own error so that a gateway can
// count refusals by reason.
package sni

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Reasons a connection is refused.
var (
	ErrNotTLS         = errors.New("not a TLS handshake record")
	ErrNotClientHello = errors.New("the first handshake message is not a ClientHello")
	ErrTooLarge       = errors.New("ClientHello larger than allowed")
	ErrTruncated      = errors.New("ClientHello truncated")
	ErrMalformed      = errors.New("malformed ClientHello")
	ErrNoSNI          = errors.New("ClientHello without a server name")
)

const (
	recordHeader      = 5
	maxRecordPayload  = 16384 // TLS plaintext limit
	typeHandshake     = 22
	typeClientHello   = 1
	extServerName     = 0
	nameTypeHostName  = 0
	maxHostNameLength = 253
	// DefaultMaxHello bounds a ClientHello; real ones are a few KB (Go 1.26 sends ~1.5 KB
	// with a post-quantum key share).
	DefaultMaxHello = 16 << 10
)

// Parse reads the server name from the start of what a client sent: TLS records up to the
// whole ClientHello (which may span records); bytes after it are not looked at. An empty
// b gives io.EOF, a ClientHello not yet whole ErrTruncated. maxHello bounds the
// ClientHello message (0: DefaultMaxHello). b is only read: a ClientHello in one record
// (the usual case) is parsed where it is.
func Parse(b []byte, maxHello int) (serverName string, err error) {
	if maxHello <= 0 {
		maxHello = DefaultMaxHello
	}
	if len(b) == 0 {
		return "", io.EOF // the client sent nothing
	}
	var msg []byte // the handshake message; copied only when it spans records
	for {
		if (len(b) > 0 && b[0] != typeHandshake) || (len(b) > 1 && b[1] != 3) {
			return "", ErrNotTLS // known from the first byte, to refuse plain text at once
		}
		if len(b) < recordHeader {
			return "", ErrTruncated
		}
		n := int(binary.BigEndian.Uint16(b[3:recordHeader]))
		if n == 0 || n > maxRecordPayload {
			return "", fmt.Errorf("%w: record of %d bytes", ErrMalformed, n)
		}
		if len(msg)+n > maxHello+4 {
			return "", ErrTooLarge
		}
		if len(b) < recordHeader+n {
			return "", ErrTruncated
		}
		payload := b[recordHeader : recordHeader+n]
		b = b[recordHeader+n:]
		if msg == nil {
			msg = payload[:len(payload):len(payload)] // a later append copies
		} else {
			msg = append(msg, payload...)
		}
		if len(msg) < 4 {
			continue
		}
		if msg[0] != typeClientHello {
			return "", ErrNotClientHello
		}
		want := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if want > maxHello {
			return "", ErrTooLarge
		}
		if len(msg)-4 >= want {
			return ServerName(msg[4 : 4+want])
		}
	}
}

// ServerName parses the body of a ClientHello handshake message and returns the host name
// of its server_name extension.
func ServerName(body []byte) (string, error) {
	s := parser{b: body}
	s.skip(2 + 32)      // legacy_version, random
	s.skip(int(s.u8())) // legacy_session_id
	cs := int(s.u16())  // cipher_suites
	if cs < 2 || cs%2 != 0 {
		return "", fmt.Errorf("%w: cipher suites of %d bytes", ErrMalformed, cs)
	}
	s.skip(cs)
	comp := int(s.u8()) // legacy_compression_methods
	if comp < 1 {
		return "", fmt.Errorf("%w: no compression method", ErrMalformed)
	}
	s.skip(comp)
	if s.err != nil {
		return "", s.err
	}
	if len(s.b) == 0 {
		return "", ErrNoSNI // no extensions at all
	}
	exts := parser{b: s.bytes(int(s.u16()))}
	if s.err != nil {
		return "", s.err
	}
	for len(exts.b) > 0 && exts.err == nil {
		typ := exts.u16()
		data := parser{b: exts.bytes(int(exts.u16()))}
		if exts.err != nil || typ != extServerName {
			continue
		}
		list := parser{b: data.bytes(int(data.u16()))}
		for len(list.b) > 0 && list.err == nil && data.err == nil {
			kind := list.u8()
			name := list.bytes(int(list.u16()))
			if list.err != nil || kind != nameTypeHostName {
				continue
			}
			if err := checkHostName(name); err != nil {
				return "", err
			}
			return string(name), nil
		}
		if data.err != nil {
			return "", data.err
		}
		if list.err != nil {
			return "", list.err
		}
		return "", ErrNoSNI
	}
	if exts.err != nil {
		return "", exts.err
	}
	return "", ErrNoSNI
}

// checkHostName accepts what a DNS name (with Istio's underscores) may hold.
func checkHostName(name []byte) error {
	if len(name) == 0 || len(name) > maxHostNameLength {
		return fmt.Errorf("%w: server name of %d bytes", ErrMalformed, len(name))
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return fmt.Errorf("%w: server name with byte %#x", ErrMalformed, c)
		}
	}
	return nil
}

// parser reads big-endian fields; the first short read sets err and later reads return
// zeros.
type parser struct {
	b   []byte
	err error
}

func (p *parser) bytes(n int) []byte {
	if p.err != nil {
		return nil
	}
	if n < 0 || n > len(p.b) {
		p.err = ErrMalformed
		p.b = nil
		return nil
	}
	out := p.b[:n]
	p.b = p.b[n:]
	return out
}

func (p *parser) skip(n int) { p.bytes(n) }

func (p *parser) u8() uint8 {
	b := p.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (p *parser) u16() uint16 {
	b := p.bytes(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}
