package xds

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	pushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_xds_pushes_total",
		Help: "xDS responses sent to proxies, by resource type (Istio's pilot_xds_pushes).",
	}, []string{"type"})
	nacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_xds_nacks_total",
		Help: "xDS responses proxies rejected, by resource type.",
	}, []string{"type"})
	convergence = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshfed_proxy_convergence_seconds",
		Help:    "Time from a configuration change to a proxy ACKing it, by resource type (Istio's pilot_proxy_convergence_time).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"type"})
	connectedProxies = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshfed_xds_connected_proxies",
		Help: "Proxies with an open ADS stream (Istio's pilot_xds).",
	})
	snapshots = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshfed_xds_snapshots_total",
		Help: "Snapshots set because some resource type changed.",
	})
	configErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshfed_xds_config_errors_total",
		Help: "Configurations that failed their checks and were not served.",
	})
	buildSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshfed_xds_build_seconds",
		Help:    "Time to read the member's objects and translate them.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
)

func init() {
	crmetrics.Registry.MustRegister(pushes, nacks, convergence, connectedProxies, snapshots, configErrors, buildSeconds)
}
