package testbed

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric reads the Prometheus endpoint at url and returns the value of the first sample
// whose line starts with sample: a name and labels as the exposition writes them, with a
// space after to take only that series (`meshfed_gateway_refusals_total{reason="no_sni"} `).
// It is "" when there is none, or the endpoint does not answer.
func Metric(ctx context.Context, url, sample string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// MetricSum is Metric summed over several endpoints (the replicas of one component); ""
// when none has the sample.
func MetricSum(ctx context.Context, urls []string, sample string) string {
	var sum float64
	found := false
	for _, url := range urls {
		if f, err := strconv.ParseFloat(Metric(ctx, url, sample), 64); err == nil {
			sum, found = sum+f, true
		}
	}
	if !found {
		return ""
	}
	return strconv.FormatFloat(sum, 'f', -1, 64)
}
