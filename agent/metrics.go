package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	registry     = prometheus.NewRegistry()
	certificates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshfed_agent_certificates_total",
		Help: "Workload certificates the agent got from the CA service.",
	})
)

func init() {
	registry.MustRegister(certificates)
}

func metricsHandler() http.Handler { return promhttp.HandlerFor(registry, promhttp.HandlerOpts{}) }
