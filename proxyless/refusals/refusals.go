package refusals

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/authz/audit"
)

// LoggerName is the name of the audit logger: the last element of the type URL of the
// configuration the control plane sends (a TypedStruct), which is TypeURL.
const (
	LoggerName = "meshfed_refusal_counter"
	TypeURL    = "meshfed.io/" + LoggerName
)

// MaxValues is how many distinct values the method and caller labels take each; later
// values are counted as Other.
const MaxValues = 64

// Other stands for the values of a label past MaxValues.
const Other = "other"

// Config is the logger's configuration, as the control plane sends it.
type Config struct {
	audit.LoggerConfig `json:"-"`
	// Service is the service whose calls the logger counts, as namespace/name.
	Service string `json:"service"`
}

// Refused counts the refused calls by service, method, caller and the rule that refused
// them ("" when no Allow rule matched).
var Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meshfed_authz_refused_calls_total",
	Help: "Calls refused by meshfed's authorization (ServicePolicy), by service, method, caller (SPIFFE ID) and the Deny rule that matched (empty: no Allow rule matched).",
}, []string{"service", "method", "caller", "rule"})

func init() {
	audit.RegisterLoggerBuilder(builder{labels: newLabels(MaxValues)})
	prometheus.MustRegister(Refused)
}

type builder struct{ labels *labels }

func (builder) Name() string { return LoggerName }

func (builder) ParseLoggerConfig(raw json.RawMessage) (audit.LoggerConfig, error) {
	c := &Config{}
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("%s: configuration: %w", LoggerName, err)
	}
	return c, nil
}

func (b builder) Build(c audit.LoggerConfig) audit.Logger {
	cfg, _ := c.(*Config)
	if cfg == nil {
		cfg = &Config{}
	}
	return logger{service: cfg.Service, labels: b.labels}
}

type logger struct {
	service string
	labels  *labels
}

func (l logger) Log(e *audit.Event) {
	if e.Authorized {
		return
	}
	Refused.WithLabelValues(l.service, l.labels.method(e.FullMethodName), l.labels.caller(e.Principal), e.MatchedRule).Inc()
}

// labels keeps the label values seen so far, up to limit of each kind.
type labels struct {
	mu               sync.Mutex
	limit            int
	methods, callers map[string]bool
}

func newLabels(limit int) *labels {
	return &labels{limit: limit, methods: map[string]bool{}, callers: map[string]bool{}}
}

func (l *labels) method(v string) string { return l.bound(l.methods, v) }
func (l *labels) caller(v string) string { return l.bound(l.callers, v) }

func (l *labels) bound(seen map[string]bool, v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seen[v] {
		return v
	}
	if len(seen) >= l.limit {
		return Other
	}
	seen[v] = true
	return v
}
