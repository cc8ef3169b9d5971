package sni

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

const sniName = "outbound_.9080_._.echo.shop.svc.clusterset.local"

// clientHello returns the bytes a Go TLS client sends first for serverName.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		c := tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_ = c.Handshake() // fails once the pipe closes
	}()
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	hdr := make([]byte, recordHeader)
	if _, err := io.ReadFull(server, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(server, body); err != nil {
		t.Fatal(err)
	}
	server.Close()
	buf.Write(hdr)
	buf.Write(body)
	return buf.Bytes()
}

// fragment re-splits a one-record ClientHello into records of at most size bytes.
func fragment(hello []byte, size int) []byte {
	payload := hello[recordHeader:]
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, typeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

func TestRead(t *testing.T) {
	hello := clientHello(t, sniName)
	t.Logf("a Go client's ClientHello: %d bytes", len(hello))
	withTail := append(append([]byte{}, hello...), "application data"...)
	oversized := append([]byte{}, hello...)
	oversized[recordHeader+1], oversized[recordHeader+2], oversized[recordHeader+3] = 0x01, 0x00, 0x00 // 64 KiB message
	cases := []struct {
		name    string
		in      []byte
		want    string
		err     error
		rawSize int // bytes Read may consume; -1 for all of in
	}{
		{"a Go client", hello, sniName, nil, -1},
		{"bytes after the hello are left unread", withTail, sniName, nil, len(hello)},
		{"the hello in 100-byte records", fragment(hello, 100), sniName, nil, -1},
		{"the hello in 1-byte records", fragment(hello, 1), sniName, nil, -1},
		{"no server name", clientHello(t, ""), "", ErrNoSNI, -1},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", ErrNotTLS, recordHeader},
		{"nothing at all", nil, "", io.EOF, 0},
		{"cut in the record header", hello[:3], "", ErrTruncated, 3},
		{"cut in the hello", hello[:200], "", ErrTruncated, 200},
		{"a message larger than allowed", oversized, "", ErrTooLarge, -1},
		{"an empty record", []byte{typeHandshake, 3, 1, 0, 0}, "", ErrMalformed, recordHeader},
		{"not a ClientHello", append([]byte{typeHandshake, 3, 1, 0, 4}, 2, 0, 0, 0), "", ErrNotClientHello, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name, raw, err := Read(bytes.NewReader(tc.in), 0)
			if !errors.Is(err, tc.err) || name != tc.want {
				t.Fatalf("Read = %q, %v; want %q, %v", name, err, tc.want, tc.err)
			}
			size := tc.rawSize
			if size < 0 {
				size = len(tc.in)
			}
			if !bytes.Equal(raw, tc.in[:min(size, len(tc.in))]) {
				t.Errorf("raw is %d bytes, want the first %d bytes of the input", len(raw), size)
			}
		})
	}
}

func TestServerNameRejectsOddNames(t *testing.T) {
	hello := clientHello(t, "abcdefgh.example")
	i := bytes.Index(hello, []byte("abcdefgh.example"))
	for _, bad := range []byte{0, '/', ' ', 0xff} {
		h := append([]byte{}, hello...)
		h[i+3] = bad
		if _, _, err := Read(bytes.NewReader(h), 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("byte %#x in the name: %v, want ErrMalformed", bad, err)
		}
	}
}

// FuzzRead: no input makes Read panic or read past the ClientHello; what it accepts is a
// host name, and raw is always a prefix of the input.
func FuzzRead(f *testing.F) {
	hello := clientHello(f, sniName)
	f.Add(hello)
	f.Add(fragment(hello, 7))
	f.Add(clientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		name, raw, err := Read(bytes.NewReader(in), 4096)
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("raw (%d bytes) is not a prefix of the input", len(raw))
		}
		if err == nil {
			if checkHostName([]byte(name)) != nil || strings.ContainsAny(name, "\x00/ ") {
				t.Fatalf("accepted server name %q", name)
			}
		}
	})
}
