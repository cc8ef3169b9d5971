package repo

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// credentials are what must never be committed: private keys (PEM, or base64 PEM as a
// kubeconfig's client-key-data carries them) and service-account or bearer tokens.
var credentials = map[string]*regexp.Regexp{
	"a PEM private key":              regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`),
	"a base64 PEM private key":       regexp.MustCompile(`LS0tLS1CRUdJTi[A-Za-z0-9+/]{0,8}(UFJJVkFURSBLRVkt|BSSVZBVEUgS0VZL|QUklWQVRFIEtFWS0)`),
	"a kubeconfig's client-key-data": regexp.MustCompile(`client-key-data:\s*[A-Za-z0-9+/=]{40,}`),
	"a JSON Web Token":               regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}`),
}

// TestRepositoryHoldsNoCredentials: a credential in the repository is one every clone
// holds (the kuttl pack once committed the kubeconfig, with a system:masters client key,
// that kuttl writes where it runs). Every tracked file is searched.
func TestRepositoryHoldsNoCredentials(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout, or no git (%v): the tracked files are unknown", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 100 {
		t.Fatalf("git lists %d files: not the repository", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		} else if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(data, 0) >= 0 {
			continue // binary
		}
		for what, re := range credentials {
			if loc := re.FindIndex(data); loc != nil {
				line := bytes.Count(data[:loc[0]], []byte("\n")) + 1
				t.Errorf("%s:%d holds %s: remove it (and rotate it if it was ever real)", f, line, what)
			}
		}
	}
}
