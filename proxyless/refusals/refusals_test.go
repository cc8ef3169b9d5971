package refusals

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/authz/audit"
)

func TestCountsRefusedCallsOnly(t *testing.T) {
	Refused.Reset()
	b := audit.GetLoggerBuilder(LoggerName)
	if b == nil {
		t.Fatalf("no audit logger %q registered", LoggerName)
	}
	cfg, err := b.ParseLoggerConfig([]byte(`{"service":"shop/echo","unknown":1}`))
	if err != nil {
		t.Fatal(err)
	}
	l := b.Build(cfg)
	intruder := "spiffe://cluster.local/ns/shop/sa/intruder"
	l.Log(&audit.Event{FullMethodName: "/pkg.Svc/Get", Principal: intruder, Authorized: false})
	l.Log(&audit.Event{FullMethodName: "/pkg.Svc/Get", Principal: intruder, Authorized: false})
	l.Log(&audit.Event{FullMethodName: "/pkg.Svc/Get", Principal: intruder, MatchedRule: "shop/p/1", Authorized: false})
	l.Log(&audit.Event{FullMethodName: "/pkg.Svc/Get", Principal: "spiffe://cluster.local/ns/shop/sa/client", Authorized: true})
	for _, c := range []struct {
		rule string
		want float64
	}{{"", 2}, {"shop/p/1", 1}} {
		if got := testutil.ToFloat64(Refused.WithLabelValues("shop/echo", "/pkg.Svc/Get", intruder, c.rule)); got != c.want {
			t.Errorf("rule %q: %v refusals counted, want %v", c.rule, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(Refused); n != 2 {
		t.Errorf("%d series, want 2 (an allowed call is not counted)", n)
	}
}

func TestConfigurationErrors(t *testing.T) {
	for _, raw := range []string{`{`, `[]`, `{"service":7}`} {
		if _, err := (builder{}).ParseLoggerConfig([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
}

// A caller that invents method names, or many callers, cannot add series past the bound.
func TestLabelsAreBounded(t *testing.T) {
	Refused.Reset()
	b := builder{labels: newLabels(3)}
	l := b.Build(&Config{Service: "shop/echo"})
	for i := range 100 {
		l.Log(&audit.Event{FullMethodName: fmt.Sprintf("/made.Up/M%d", i), Principal: "spiffe://td/ns/a/sa/x"})
	}
	for i := range 100 {
		l.Log(&audit.Event{FullMethodName: "/made.Up/M0", Principal: fmt.Sprintf("spiffe://td/ns/a/sa/x%d", i)})
	}
	// Caller x on methods M0, M1, M2 and "other"; then on M0 the callers x0 and x1 (x took
	// the first of 3 places) and "other".
	if n := testutil.CollectAndCount(Refused); n != 7 {
		t.Errorf("%d series after 200 distinct refusals, want 7", n)
	}
	if got := testutil.ToFloat64(Refused.WithLabelValues("shop/echo", Other, "spiffe://td/ns/a/sa/x", "")); got != 97 {
		t.Errorf("%v calls to methods past the bound counted as %q, want 97", got, Other)
	}
	if got := testutil.ToFloat64(Refused.WithLabelValues("shop/echo", "/made.Up/M0", Other, "")); got != 98 {
		t.Errorf("%v calls of callers past the bound counted as %q, want 98", got, Other)
	}
}
