package gateway

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	perSNI      *prometheus.CounterVec
	active      prometheus.GaugeFunc
	routes      prometheus.Gauge
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	spliced     prometheus.Counter
	rejected    prometheus.Counter
	atCap       prometheus.Counter
	idleClosed  prometheus.Counter
}

// newMetrics registers the gateway's metrics on reg; open counts the connections it holds.
func newMetrics(reg prometheus.Registerer, open func() float64) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_connections_total",
			Help: "Connections accepted, by result (routed, refused)."}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_refusals_total",
			Help: "Connections refused, by reason."}, []string{"reason"}),
		perSNI: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_sni_connections_total",
			Help: "Connections routed, by server name (only routed names appear)."}, []string{"sni"}),
		active:   prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_gateway_active_connections", Help: "Connections open now."}, open),
		routes:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_gateway_routes", Help: "Server names the gateway routes."}),
		bytesIn:  prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_received_bytes_total", Help: "Bytes from clients to backends."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_sent_bytes_total", Help: "Bytes from backends to clients."}),
		spliced: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_spliced_bytes_total",
			Help: "Bytes of bulk transfers, both ways, moved from socket to socket without a copy (splice); part of the received and sent totals."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_config_rejected_total", Help: "xDS configurations the gateway refused (NACK)."}),
		atCap: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_accept_paused_total",
			Help: "Times an event loop found --max-connections connections held and paused accepting for 50 ms (new ones wait in the listen backlog)."}),
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_gateway_idle_closed_total",
			Help: "Routed connections closed after --idle-timeout without a byte either way."}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.refusals, m.perSNI, m.active, m.routes, m.bytesIn, m.bytesOut, m.spliced, m.rejected, m.atCap, m.idleClosed)
	}
	return m
}

func (m *metrics) refused(reason string) {
	m.connections.WithLabelValues("refused").Inc()
	m.refusals.WithLabelValues(reason).Inc()
}

func (m *metrics) routed(sni string) {
	m.connections.WithLabelValues("routed").Inc()
	m.perSNI.WithLabelValues(sni).Inc()
}
