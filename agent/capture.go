package agent

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// CaptureOptions say how the pod's TCP traffic goes through its Envoy sidecar.
type CaptureOptions struct {
	// OutboundPort takes the connections the pod opens; InboundPort those it accepts.
	OutboundPort, InboundPort uint16
	// ExcludeUIDs are the users whose connections go out as they are: Envoy's, and the
	// agent's (it reaches the CA and the control plane itself).
	ExcludeUIDs []uint32
	// ExcludeInboundPorts reach the pod without Envoy (the agent's health port, ...).
	ExcludeInboundPorts []uint16
}

// CaptureTable is the nftables table capture writes (family inet).
const CaptureTable = "meshfed"

// Capture writes the rules that redirect the pod's TCP traffic to its Envoy sidecar, in
// the network namespace of the calling thread (the capture init container's, which is the
// pod's): every inbound connection but to the excluded ports goes to InboundPort, every
// outbound one but those of the excluded users and those to loopback goes to
// OutboundPort. It replaces
// rules of an earlier run, so that a restarted init container leaves one set.
func Capture(o CaptureOptions) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: CaptureTable}
	c.AddTable(table)
	c.DelTable(table) // an earlier run's, with everything in it
	c.AddTable(table)
	in := c.AddChain(&nftables.Chain{Name: "inbound", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	out := c.AddChain(&nftables.Chain{Name: "outbound", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	rule := func(chain *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	}
	for _, p := range o.ExcludeInboundPorts {
		rule(in, append(tcpDport(p), &expr.Verdict{Kind: expr.VerdictReturn})...)
	}
	rule(in, append(tcp(), redirect(o.InboundPort)...)...)
	for _, uid := range o.ExcludeUIDs {
		rule(out, &expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uid)},
			&expr.Verdict{Kind: expr.VerdictReturn})
	}
	rule(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
		&expr.Verdict{Kind: expr.VerdictReturn})
	rule(out, append(tcp(), redirect(o.OutboundPort)...)...)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write the capture rules (the container needs NET_ADMIN): %w", err)
	}
	return nil
}

// tcp matches TCP.
func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// tcpDport matches TCP to port.
func tcpDport(port uint16) []expr.Any {
	return append(tcp(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)})
}

// redirect sends the connection to port on the host itself.
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
