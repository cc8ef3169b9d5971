package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

// newDemoCommand is `make demo`: three clusters federated by meshfed, and the story told
// with numbers measured on the spot.
func newDemoCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Federate 3 local clusters in 3 networks and show export/import, trust, calls through the gateways, a split and a failover",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := testbed.CheckPods(); err != nil {
				return fmt.Errorf("the demo runs meshfed as pods: %w", err)
			}
			root, err := testbed.RepoRoot()
			if err != nil {
				return err
			}
			dir := filepath.Join(root, ".testbed")
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			d := &demo{start: time.Now()}
			d.step("Starting 3 clusters (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a node, kube-proxy, CoreDNS and cert-manager each), and installing meshfed in each with kubectl apply -k of config/default")
			tb, err := testbed.Start(ctx, testbed.Options{Clusters: 3, Dir: dir, Operator: true, Progress: os.Stdout})
			if err != nil {
				return err
			}
			defer func() {
				fmt.Println("\nstopping the clusters…")
				tb.Stop()
				fmt.Println("stopped; logs and kubeconfigs stay in", dir)
			}()
			d.say("the operator runs as pods of its Deployment, from %s", tb.Images.Operator)
			d.say("the gateways will run as pods of the Deployment each Mesh writes, from %s", tb.Images.Gateway)
			if err := d.run(ctx, tb); err != nil {
				return err
			}
			d.report()
			printWelcome(tb, "Look around (the clusters stop when the demo exits; DEMO_FLAGS=--keep keeps them):")
			if keep {
				fmt.Println("Press Ctrl-C to stop.")
				<-ctx.Done()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the clusters up until Ctrl-C")
	return cmd
}

type demo struct {
	start time.Time
	rows  [][2]string
}

func (d *demo) step(format string, args ...any) {
	fmt.Printf("\n[%5.1fs] ▶ %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("          %s\n", fmt.Sprintf(format, args...))
}

func (d *demo) record(what, value string) {
	d.rows = append(d.rows, [2]string{what, value})
	d.say("%s: %s", what, value)
}

func (d *demo) run(ctx context.Context, tb *testbed.Testbed) error {
	c1, c2, c3 := tb.Clusters[0], tb.Clusters[1], tb.Clusters[2]
	d.step("Federating: %s is the hub; each cluster joins (meshfedctl join) in a network of its own, and MeshFederation %s/%s bootstraps one root CA", c1.Name, sc.HubNamespace, sc.Federation)
	networks := map[string]string{c1.Name: "net-1", c2.Name: "net-2", c3.Name: "net-3"}
	m, err := sc.FederateNetworks(ctx, tb, networks)
	if err != nil {
		return err
	}
	var fed meshv1.MeshFederation
	if err := c1.Client.Get(ctx, client.ObjectKey{Namespace: sc.HubNamespace, Name: sc.Federation}, &fed); err != nil {
		return err
	}
	d.record("root CA (SHA-256)", fmt.Sprintf("%.16s…, an intermediate CA per member, bundle %s", fed.Status.Trust.RootFingerprint, fed.Status.Trust.BundleVersion))

	d.step("Waiting for each Mesh's east-west gateway (pods behind a LoadBalancer Service), then cutting every path between the networks except the gateways")
	gws := map[string]*sc.Gateway{}
	gateways := map[string][]string{}
	for _, c := range tb.Clusters {
		gw, err := m.Gateway(ctx, c)
		if err != nil {
			return err
		}
		gws[c.Name], gateways[c.Name] = gw, []string{gw.Address}
		d.say("%s (%s): gateway at %s:%d, %d pods from %s", c.Name, networks[c.Name], gw.Address, sc.GatewayPort, len(gw.Pods), tb.Images.Gateway)
	}
	if err := tb.IsolateNetworks(gateways); err != nil {
		return err
	}

	d.step("Exporting shop/echo from %s and %s (Service + ServiceExport)", c2.Name, c3.Name)
	exported := time.Now()
	for _, c := range []*testbed.Cluster{c2, c3} {
		if err := m.ExportEcho(ctx, c); err != nil {
			return err
		}
	}
	err = testbed.Poll(ctx, time.Minute, "ServiceImport shop/echo in every cluster", func() error {
		for _, c := range tb.Clusters {
			var si mcsv1beta1.ServiceImport
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: "echo"}, &si); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			if len(si.Status.Clusters) != 2 {
				return fmt.Errorf("%s: status.clusters %v", c.Name, si.Status.Clusters)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.record("export → ServiceImport in all 3 clusters", time.Since(exported).Round(time.Millisecond).String())

	d.step("Resolving the ClusterSet name in each cluster the way a pod does: its cluster DNS (CoreDNS) forwards clusterset.local to the meshfed-dns pods its operator runs (one server block in the Corefile, docs/user-guide.md)")
	if err := m.ForwardClusterSetDNS(ctx); err != nil {
		return err
	}
	for _, c := range tb.Clusters {
		d.say("%s: dig echo.shop.svc.clusterset.local A, and SRV _grpc._tcp", c.Name)
		for _, q := range []struct {
			name  string
			qtype uint16
		}{{"echo.shop.svc.clusterset.local", dns.TypeA}, {"_grpc._tcp.echo.shop.svc.clusterset.local", dns.TypeSRV}} {
			var resp *dns.Msg
			err := testbed.Poll(ctx, 30*time.Second, c.Name+": "+q.name, func() error {
				var err error
				if resp, err = c.Resolve(ctx, q.name, q.qtype); err != nil {
					return err
				}
				if len(resp.Answer) == 0 {
					return fmt.Errorf("%s, no answer", dns.RcodeToString[resp.Rcode])
				}
				return nil
			})
			if err != nil {
				return err
			}
			d.say("  ;; status: %s, flags:%s", dns.RcodeToString[resp.Rcode], flags(resp))
			for _, rr := range resp.Answer {
				d.say("  %s", rr)
			}
		}
	}

	d.step("Deploying echo servers in %s and %s, and a client in %s: plain Deployments of the echo image in namespace shop, labelled %s=enabled, so meshfed's webhook adds meshfed-agent, which gets each pod its SPIFFE certificate from the member's CA service and carries its xDS over mTLS; the testbed writes no certificate or bootstrap", c2.Name, c3.Name, c1.Name, sc.InjectLabel)
	echo := map[string]string{"app": "echo"}
	server2, err := m.DeployInjected(ctx, c2, "echo", "server", "echo", sc.EchoPort, echo)
	if err != nil {
		return err
	}
	if _, err := m.DeployInjected(ctx, c3, "echo", "server", "echo", sc.EchoPort, echo); err != nil {
		return err
	}
	cl, err := m.DeployInjected(ctx, c1, "client", "client", "client", sc.ClientPort, nil)
	if err != nil {
		return err
	}
	tp := sc.Policy()
	tp.Failover = []string{c2.Name, c3.Name}
	if _, err := m.SetPolicy(ctx, tp); err != nil {
		return err
	}
	direct, why, err := sc.Dial(ctx, cl, server2.Addr(sc.EchoPort))
	if err != nil {
		return err
	}
	if direct {
		return fmt.Errorf("a pod of %s reached a pod of %s directly: the networks are not isolated", c1.Name, c2.Name)
	}
	d.record("direct path "+c1.Name+" → "+c2.Name+" pod", "blocked ("+why+")")

	d.step("A cross-network call: %s → %s, through %s's gateway", c1.Name, sc.Target, c2.Name)
	if err := sc.AllOn(ctx, cl, c2.Name, 20, time.Minute); err != nil {
		return err
	}
	cs, err := sc.Calls(ctx, cl, 1)
	if err != nil {
		return err
	}
	d.record("call from "+c1.Name, fmt.Sprintf("answered by %s via its gateway (%s routed connections)", cs[0].Cluster,
		sc.GatewayMetric(ctx, gws[c2.Name], `meshfed_gateway_sni_connections_total{sni="outbound_.9000_._.echo.shop.svc.clusterset.local"} `)))
	d.record("identities, end to end through the gateway", fmt.Sprintf("client %s, server %s", cs[0].Caller, cs[0].Peer))

	d.step("A weighted split {%s: 20, %s: 80}, 1000 calls", c2.Name, c3.Name)
	if _, err := m.SetPolicy(ctx, weightsPolicy(c2.Name, c3.Name, 20, 80)); err != nil {
		return err
	}
	err = testbed.Poll(ctx, 30*time.Second, "the split in force", func() error {
		cs, err := sc.Calls(ctx, cl, 50)
		if err == nil && sc.Split(cs)[c3.Name] == 0 {
			err = errors.New("no call on " + c3.Name + " yet")
		}
		return err
	})
	if err != nil {
		return err
	}
	if cs, err = sc.Calls(ctx, cl, 1000); err != nil {
		return err
	}
	s := sc.Split(cs)
	d.record("split over 1000 calls", fmt.Sprintf("%s %.1f %%, %s %.1f %%, failed %d", c2.Name, float64(s[c2.Name])/10, c3.Name, float64(s[c3.Name])/10, s[""]))

	d.step("Failover: a call every 10 ms; the server in %s is killed", c2.Name)
	if _, err := m.SetPolicy(ctx, tp); err != nil {
		return err
	}
	if err := sc.AllOn(ctx, cl, c2.Name, 20, 30*time.Second); err != nil {
		return err
	}
	load, err := sc.StartLoad(ctx, cl, 10*time.Millisecond)
	if err != nil {
		return err
	}
	if err := testbed.Poll(ctx, 10*time.Second, "calls before the kill", func() error {
		cs, err := load.Results(ctx)
		if err == nil && len(cs) < 30 {
			err = fmt.Errorf("%d calls", len(cs))
		}
		return err
	}); err != nil {
		return err
	}
	killed := time.Now()
	if err := server2.Kill(ctx); err != nil {
		return err
	}
	if err := sc.AllOn(ctx, cl, c3.Name, 20, 10*time.Second); err != nil {
		return err
	}
	after := load.Offset(time.Now())
	if err := testbed.Poll(ctx, 10*time.Second, "calls after the failover", func() error {
		cs, err := load.Results(ctx)
		if err == nil && (len(cs) == 0 || cs[len(cs)-1].At < after+300) {
			err = errors.New("not yet")
		}
		return err
	}); err != nil {
		return err
	}
	if cs, err = load.Stop(ctx); err != nil {
		return err
	}
	d.record("failover after the kill", fmt.Sprintf("every call succeeds on %s %.0f ms later; %d of %d calls lost (in flight)",
		c3.Name, sc.SteadyAfter(cs, load.Offset(killed), c3.Name), sc.Split(cs)[""], len(cs)))
	d.step("%s's node restarts the killed server (the Deployment's pod, after the back-off)", c2.Name)
	if err := server2.WaitReady(ctx, true); err != nil {
		return err
	}
	back := time.Now()
	if err := sc.AllOn(ctx, cl, c2.Name, 20, 30*time.Second); err != nil {
		return err
	}
	d.record("traffic back on "+c2.Name, fmt.Sprintf("%s after the kill; %s after its server was ready again",
		back.Sub(killed).Round(100*time.Millisecond), time.Since(back).Round(time.Millisecond)))
	if err := d.canary(ctx, m, c1, c3, cl); err != nil {
		return err
	}
	return d.refusal(ctx, m, c1, []*testbed.Cluster{c2, c3}, cl)
}

// canary exports echo-canary from canaryCluster and routes the calls of caller's cluster
// that carry x-canary: true to it, with a Gateway API GRPCRoute attached to echo.
func (d *demo) canary(ctx context.Context, m *sc.Mesh, c, canaryCluster *testbed.Cluster, caller *testbed.Workload) error {
	d.step("A header-routed canary: echo-canary, exported by %s, takes the calls of %s that carry x-canary: true (GRPCRoute shop/echo-canary in %s, parent ServiceImport echo)", canaryCluster.Name, c.Name, c.Name)
	if err := m.ExportEchoAs(ctx, canaryCluster, "echo-canary"); err != nil {
		return err
	}
	if _, err := m.DeployInjected(ctx, canaryCluster, "echo-canary", "server", "echo", sc.EchoPort, map[string]string{"app": "echo-canary"}); err != nil {
		return err
	}
	if err := testbed.Poll(ctx, time.Minute, "echo-canary imported in "+c.Name, func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: "echo-canary"}, &mcsv1beta1.ServiceImport{})
	}); err != nil {
		return err
	}
	route := sc.CanaryRoute("echo-canary", "echo", "echo-canary", "x-canary", "true")
	if err := c.Client.Create(ctx, route); err != nil {
		return err
	}
	header := map[string]string{"x-canary": "true"}
	onCanary := func(cs []sc.Call) int {
		n := 0
		for _, call := range cs {
			if call.OK && strings.HasPrefix(call.Pod, "echo-canary-") {
				n++
			}
		}
		return n
	}
	var with, without []sc.Call
	if err := testbed.Poll(ctx, 30*time.Second, "the canary calls on echo-canary", func() error {
		var err error
		if with, err = sc.CallsWith(ctx, caller, 20, header); err == nil && onCanary(with) < len(with) {
			err = fmt.Errorf("%d of %d on echo-canary", onCanary(with), len(with))
		}
		return err
	}); err != nil {
		return err
	}
	without, err := sc.Calls(ctx, caller, 20)
	if err != nil {
		return err
	}
	var r gatewayv1.GRPCRoute
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(route), &r); err != nil {
		return err
	}
	for _, p := range r.Status.Parents {
		for _, cond := range p.Conditions {
			d.say("GRPCRoute status (%s): %s=%s %s", p.ControllerName, cond.Type, cond.Status, cond.Reason)
		}
	}
	d.record("calls with x-canary: true", fmt.Sprintf("%d of %d answered by echo-canary in %s", onCanary(with), len(with), with[0].Cluster))
	d.record("calls without the header", fmt.Sprintf("%d of %d answered by echo (split %v)", len(without)-onCanary(without), len(without), sc.Split(without)))
	return c.Client.Delete(ctx, route)
}

// refusal lets only the client's service account call echo in the exporting clusters and
// shows a caller under another account refused.
func (d *demo) refusal(ctx context.Context, m *sc.Mesh, c *testbed.Cluster, exporters []*testbed.Cluster, allowed *testbed.Workload) error {
	d.step("Authorization: a ServicePolicy in each exporting cluster lets only spiffe://cluster.local/ns/shop/sa/client call echo; a pod of %s under service account intruder calls too", c.Name)
	intruder, err := m.DeployInjected(ctx, c, "intruder", "client", "intruder", sc.ClientPort, nil)
	if err != nil {
		return err
	}
	for _, e := range exporters {
		if err := e.Client.Create(ctx, sc.AllowOnly("echo-callers", "echo", "spiffe://cluster.local/ns/shop/sa/client")); err != nil {
			return err
		}
	}
	var refused []sc.Call
	if err := testbed.Poll(ctx, 30*time.Second, "the intruder refused", func() error {
		var err error
		refused, err = sc.Calls(ctx, intruder, 20)
		for _, call := range refused {
			if err == nil && (call.OK || !strings.Contains(call.Error, "PermissionDenied")) {
				err = fmt.Errorf("a call: ok %v, %s", call.OK, call.Error)
			}
		}
		return err
	}); err != nil {
		return err
	}
	served, err := sc.Calls(ctx, allowed, 20)
	if err != nil {
		return err
	}
	d.say("the intruder's call: %s", refused[0].Error)
	d.record("intruder (sa/intruder)", fmt.Sprintf("%d of %d calls refused, PermissionDenied", len(refused), len(refused)))
	d.record("client (sa/client)", fmt.Sprintf("%d of %d calls served", len(served)-sc.Split(served)[""], len(served)))
	return nil
}

func weightsPolicy(a, b string, wa, wb int32) *meshv1.TrafficPolicy {
	tp := sc.Policy()
	tp.Weights = []meshv1.ClusterWeight{{Cluster: a, Weight: wa}, {Cluster: b, Weight: wb}}
	return tp
}

func (d *demo) report() {
	fmt.Printf("\n══ meshfed demo: measured in this run (%s) ══\n", time.Since(d.start).Round(time.Second))
	width := 0
	for _, r := range d.rows {
		width = max(width, len(r[0]))
	}
	for _, r := range d.rows {
		fmt.Printf("  %-*s  %s\n", width, r[0], r[1])
	}
}

// flags are a DNS answer's header flags as dig prints them.
func flags(m *dns.Msg) string {
	var out string
	for _, f := range []struct {
		set  bool
		name string
	}{{m.Response, "qr"}, {m.Authoritative, "aa"}, {m.RecursionDesired, "rd"}, {m.RecursionAvailable, "ra"}} {
		if f.set {
			out += " " + f.name
		}
	}
	return out
}
