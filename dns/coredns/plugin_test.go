package coredns

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"
)

// TestSetupRefusesWhatItDoesNotKnow: a wrong Corefile stanza is an error naming what to fix.
func TestSetupRefusesWhatItDoesNotKnow(t *testing.T) {
	for corefile, want := range map[string]string{
		"clusterset extra":                   "Wrong argument count",
		"clusterset {\n ttl five\n}":         "give seconds from 0 to 3600",
		"clusterset {\n ttl 7200\n}":         "give seconds from 0 to 3600",
		"clusterset {\n zone example.com\n}": "takes kubeconfig and ttl",
		"clusterset {\n kubeconfig\n}":       "Wrong argument count",
		"clusterset {\n kubeconfig /nope\n}": "/nope",
	} {
		err := setup(caddy.NewTestController("dns", corefile))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", corefile, err, want)
		}
	}
}
