package testbed

import (
	"context"
	"io"
	"net/http"
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
