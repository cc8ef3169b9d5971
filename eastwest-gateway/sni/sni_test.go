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

func TestParse(t *testing.T) {
	hello := clientHello(t, sniName)
	t.Logf("a Go client's ClientHello: %d bytes", len(hello))
	withTail := append(append([]byte{}, hello...), "application data"...)
	oversized := append([]byte{}, hello...)
	oversized[recordHeader+1], oversized[recordHeader+2], oversized[recordHeader+3] = 0x01, 0x00, 0x00 // 64 KiB message
	cases := []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"a Go client", hello, sniName, nil},
		{"bytes after the hello are not looked at", withTail, sniName, nil},
		{"the hello in 100-byte records", fragment(hello, 100), sniName, nil},
		{"the hello in 1-byte records", fragment(hello, 1), sniName, nil},
		{"no server name", clientHello(t, ""), "", ErrNoSNI},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", ErrNotTLS},
		{"one byte of plain text", []byte("G"), "", ErrNotTLS},
		{"nothing at all", nil, "", io.EOF},
		{"cut in the record header", hello[:3], "", ErrTruncated},
		{"cut in the hello", hello[:200], "", ErrTruncated},
		{"a message larger than allowed", oversized, "", ErrTooLarge},
		{"an empty record", []byte{typeHandshake, 3, 1, 0, 0}, "", ErrMalformed},
		{"not a ClientHello", append([]byte{typeHandshake, 3, 1, 0, 4}, 2, 0, 0, 0), "", ErrNotClientHello},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Clone(tc.in)
			name, err := Parse(in, 0)
			if !errors.Is(err, tc.err) || name != tc.want {
				t.Fatalf("Parse = %q, %v; want %q, %v", name, err, tc.want, tc.err)
			}
			if !bytes.Equal(in, tc.in) {
				t.Error("Parse changed its input")
			}
		})
	}
}

// TestParseWaitsForTheWholeHello: what a gateway has read of a ClientHello, up to the last
// byte, is reported as truncated (so it reads on), whatever the records.
func TestParseWaitsForTheWholeHello(t *testing.T) {
	hello := clientHello(t, sniName)
	for _, in := range [][]byte{hello, fragment(hello, 100), fragment(hello, 1)} {
		for n := 1; n < len(in); n++ {
			if _, err := Parse(in[:n], 0); !errors.Is(err, ErrTruncated) {
				t.Fatalf("the first %d of %d bytes: %v, want ErrTruncated", n, len(in), err)
			}
		}
		if name, err := Parse(in, 0); err != nil || name != sniName {
			t.Fatalf("all %d bytes: %q, %v", len(in), name, err)
		}
	}
}

func TestServerNameRejectsOddNames(t *testing.T) {
	hello := clientHello(t, "abcdefgh.example")
	i := bytes.Index(hello, []byte("abcdefgh.example"))
	for _, bad := range []byte{0, '/', ' ', 0xff} {
		h := append([]byte{}, hello...)
		h[i+3] = bad
		if _, err := Parse(h, 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("byte %#x in the name: %v, want ErrMalformed", bad, err)
		}
	}
}

// FuzzParse: no input makes Parse panic or change its input, and what it accepts is a
// host name.
func FuzzParse(f *testing.F) {
	hello := clientHello(f, sniName)
	f.Add(hello)
	f.Add(fragment(hello, 7))
	f.Add(clientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		before := bytes.Clone(in)
		name, err := Parse(in, 4096)
		if !bytes.Equal(in, before) {
			t.Fatal("Parse changed its input")
		}
		if err == nil {
			if checkHostName([]byte(name)) != nil || strings.ContainsAny(name, "\x00/ ") {
				t.Fatalf("accepted server name %q", name)
			}
		}
	})
}
