package agent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// TestCaptureRedirectsThePodsConnections applies the capture rules in a network namespace
// of its own and checks that a connection the pod opens lands on the outbound port.
func TestCaptureRedirectsThePodsConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("capture needs root (a network namespace and nftables)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("capture's test needs ip(8): " + err.Error())
	}
	ns := fmt.Sprintf("mfcap%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run("-n", ns, "link", "set", "eth1", "up")
	run("-n", ns, "addr", "add", "10.200.0.1/24", "dev", "eth0")
	run("-n", ns, "link", "set", "eth0", "up")

	errs := make(chan error, 1)
	go func() {
		// This goroutine's thread enters the pod's namespace and never leaves it: it is
		// thrown away when the goroutine ends locked.
		runtime.LockOSThread()
		errs <- func() error {
			fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := Capture(CaptureOptions{OutboundPort: 15001, InboundPort: 15006, ExcludeUIDs: []uint32{1337, 65532}, ExcludeInboundPorts: []uint16{15021}}); err != nil {
				return err
			}
			// Twice: a restarted init container leaves one set of rules.
			if err := Capture(CaptureOptions{OutboundPort: 15001, InboundPort: 15006, ExcludeUIDs: []uint32{1337, 65532}, ExcludeInboundPorts: []uint16{15021}}); err != nil {
				return err
			}
			c, err := nftables.New()
			if err != nil {
				return err
			}
			table := &nftables.Table{Family: nftables.TableFamilyINet, Name: CaptureTable}
			for chain, want := range map[string]int{"inbound": 2, "outbound": 4} {
				rules, err := c.GetRules(table, &nftables.Chain{Name: chain, Table: table})
				if err != nil {
					return err
				}
				if len(rules) != want {
					return fmt.Errorf("chain %s has %d rules, want %d", chain, len(rules), want)
				}
			}
			lis, err := net.Listen("tcp", "0.0.0.0:15001")
			if err != nil {
				return err
			}
			defer lis.Close()
			accepted := make(chan net.Addr, 1)
			go func() {
				conn, err := lis.Accept()
				if err == nil {
					accepted <- conn.LocalAddr()
					conn.Close()
				}
			}()
			conn, err := net.DialTimeout("tcp", "10.200.0.9:80", 2*time.Second)
			if err != nil {
				return fmt.Errorf("a connection the pod opens did not reach the outbound port: %w", err)
			}
			conn.Close()
			select {
			case addr := <-accepted:
				if port := addr.(*net.TCPAddr).Port; port != 15001 {
					return fmt.Errorf("accepted on %s", addr)
				}
			case <-time.After(2 * time.Second):
				return fmt.Errorf("the outbound listener accepted nothing")
			}
			return nil
		}()
	}()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
