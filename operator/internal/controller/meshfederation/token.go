package meshfederation

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshfed/meshfed/federation/join"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

var tokenExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_member_token_expiry_seconds",
	Help: "Unix time at which the hub's token for a member expires (members joined with a service-account token).",
}, []string{"federation", "member"})

func init() { crmetrics.Registry.MustRegister(tokenExpiry) }

// renewalDue says how long until a token that ends at expiry must be renewed, when the
// hub asks for tokens that live ttl: a third of ttl before it ends. Zero means now.
func renewalDue(expiry, now time.Time, ttl time.Duration) time.Duration {
	return max(0, expiry.Sub(now)-ttl/3)
}

// renewToken replaces the token in a member's kubeconfig Secret before it ends. The hub
// asks the member for a new token of its own ServiceAccount, the one right `meshfedctl join`
// grants it for that, and writes it into the Secret; the registry takes it over at the next
// pass (the Secret's change brings one) without reconnecting. A token that is not a service
// account's or that never expires (joins before tokens expired) is left alone; one that has
// expired cannot be renewed, and the member's condition says to join again.
func (r *Reconciler) renewToken(ctx context.Context, s *scope, mv *memberView, kubeconfig []byte) {
	token, err := join.TokenOf(kubeconfig)
	if err != nil {
		return // RestConfig already refused it
	}
	claims, ok := join.ParseServiceAccountToken(token)
	if !ok || claims.Expiry.IsZero() {
		return
	}
	ref := mv.spec.KubeconfigSecretRef
	tokenExpiry.WithLabelValues(s.owner, mv.spec.Name).Set(float64(claims.Expiry.Unix()))
	now := time.Now()
	if !now.Before(claims.Expiry) {
		mv.usable = false
		mv.err = fmt.Errorf("the hub's token in Secret %s/%s expired at %s: run meshfedctl join again",
			s.fed.Namespace, ref.Name, claims.Expiry.UTC().Format(time.RFC3339))
		return
	}
	if wait := renewalDue(claims.Expiry, now, r.TokenTTL); wait > 0 {
		s.requeue(wait)
		return
	}
	if !mv.usable {
		return // renewed once the member answers: its connection brings a pass
	}
	written, err := r.writeRenewedToken(ctx, s.fed.Namespace, ref, kubeconfig, mv, claims)
	if err != nil {
		r.Recorder.Eventf(s.fed, corev1.EventTypeWarning, meshv1.EventTokenRenewalFailed,
			"member %s: the hub could not renew its token, which expires at %s: %v (it tries again in a minute; meshfedctl join gives a new one)",
			mv.spec.Name, claims.Expiry.UTC().Format(time.RFC3339), err)
		s.requeue(time.Minute)
		return
	}
	if written {
		r.Recorder.Eventf(s.fed, corev1.EventTypeNormal, meshv1.EventTokenRenewed, "member %s: the hub renewed its token for %s", mv.spec.Name, r.TokenTTL)
	}
}

// writeRenewedToken asks for the new token and writes it; written is false when the
// Secret no longer holds the kubeconfig this pass read (a `meshfedctl join` in between
// wins, and the next pass reads its token).
func (r *Reconciler) writeRenewedToken(ctx context.Context, namespace string, ref meshv1.SecretKeyRef, kubeconfig []byte, mv *memberView, claims join.TokenClaims) (written bool, err error) {
	fresh, err := join.RequestToken(ctx, mv.member.Client(), claims.Namespace, claims.ServiceAccount, r.TokenTTL)
	if err != nil {
		return false, err
	}
	renewed, err := join.ReplaceToken(kubeconfig, fresh)
	if err != nil {
		return false, err
	}
	// The patch replaces only the kubeconfig's key, and only if the Secret still holds the
	// kubeconfig this pass read.
	var secret corev1.Secret
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		return false, err
	}
	if string(secret.Data[secretKey(ref)]) != string(kubeconfig) {
		return false, nil
	}
	base := secret.DeepCopy()
	secret.Data[secretKey(ref)] = renewed
	if err := r.Client.Patch(ctx, &secret, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return false, fmt.Errorf("write Secret %s/%s: %w", namespace, ref.Name, err)
	}
	return true, nil
}
