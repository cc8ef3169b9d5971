package clusters

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/testbed"
)

// TestMemberDownWhenRegisteredSyncsWhenItAnswers: a member whose API server is down when
// the hub registers it (the hub restarted during the member's outage) is registered anyway,
// says why it is not connected, and connects, watches and syncs on its own once the server
// answers, telling OnChange, with no other event to prompt it.
func TestMemberDownWhenRegisteredSyncsWhenItAnswers(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := t.Context()
	kubeconfig, err := os.ReadFile(c.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	c.StopAPIServer()

	var changes atomic.Int64
	r := New(Options{Scheme: scheme.Scheme, Watch: []client.Object{&corev1.ConfigMap{}},
		ProbeInterval: 100 * time.Millisecond, OnChange: func(string) { changes.Add(1) }})
	defer r.Disconnect("fed", "m")
	m, err := r.Connect("fed", "m", kubeconfig)
	if err != nil {
		t.Fatalf("a member whose API server is down was not registered: %v", err)
	}
	testbed.Eventually(t, 10*time.Second, "the member's state names the outage", func() error {
		s := m.State()
		if s.Connected || s.Synced {
			return errors.New("connected or synced while its API server is down")
		}
		if s.Err == nil || !strings.Contains(s.Err.Error(), "not reachable") {
			return errors.New("state error: " + errString(s.Err))
		}
		return nil
	})
	if _, err := r.Get("fed", "m"); !errors.Is(err, ErrClusterNotConnected) {
		t.Errorf("Get of a member that is down: %v, want ErrClusterNotConnected", err)
	}

	before := changes.Load()
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	// The probe runs every 100 ms and the informers are asked for again as often: once the
	// server answers, a few seconds bound the sync even on a loaded machine.
	testbed.Eventually(t, 20*time.Second, "the member connected and synced", func() error {
		_, err := r.Get("fed", "m")
		return err
	})
	if changes.Load() == before {
		t.Error("OnChange was not called when the member connected and synced")
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "seen-by-the-hub"}}
	if err := c.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 10*time.Second, "the member's cache sees a new ConfigMap", func() error {
		return m.Client().Get(context.Background(), client.ObjectKeyFromObject(cm), &corev1.ConfigMap{})
	})
}
