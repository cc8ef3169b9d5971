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
	return scraper{client: http.DefaultClient}.metric(ctx, url, sample)
}

// scraper reads Prometheus endpoints with its client, sending token as a bearer token
// when it is not empty.
type scraper struct {
	client *http.Client
	token  string
}

func (s scraper) metric(ctx context.Context, url, sample string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
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
	return scraper{client: http.DefaultClient}.sum(ctx, urls, sample)
}

func (s scraper) sum(ctx context.Context, urls []string, sample string) string {
	var sum float64
	found := false
	for _, url := range urls {
		if f, err := strconv.ParseFloat(s.metric(ctx, url, sample), 64); err == nil {
			sum, found = sum+f, true
		}
	}
	if !found {
		return ""
	}
	return strconv.FormatFloat(sum, 'f', -1, 64)
}
