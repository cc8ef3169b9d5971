package ca

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	signed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshfed_ca_signed_total",
		Help: "Workload certificates the CA service signed.",
	})
	refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_ca_refused_total",
		Help: "Certificate requests the CA service refused, by reason (TokenRejected, PodGone, IdentityMismatch, ...).",
	}, []string{"reason"})
	failed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshfed_ca_failures_total",
		Help: "Certificate requests the CA service could not serve through no fault of the caller (cert-manager, API server).",
	})
	signSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshfed_ca_sign_seconds",
		Help:    "Time from a request's arrival to its signed certificate.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
)

func init() {
	crmetrics.Registry.MustRegister(signed, refused, failed, signSeconds)
}
