package mesh

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",namespace=meshfed-system,resources=secrets,verbs=create;update;patch;delete

// caKey is the member's intermediate CA key and the CSR published for it.
type caKey struct {
	signer crypto.Signer
	pem    []byte
	csr    []byte
}

// errWaitingForHub: the hub has not signed this member's intermediate (or not its key).
var errWaitingForHub = errors.New("waiting for the hub")

// reconcileIntermediate keeps the member's own intermediate CA. The key is made here and
// never leaves the cluster (Secret meshfed-ca-key); the Mesh publishes its CSR; the hub has
// the root sign it and writes back the certificates (ConfigMap meshfed-intermediate); this
// pairs them with the key into meshfed-cacerts, which the Issuer and the CA service use.
// It returns the CSR to publish and the meshfed-cacerts Secret (nil while there is none).
func (r *Reconciler) reconcileIntermediate(ctx context.Context, m *meshv1.Mesh) (string, *corev1.Secret, error) {
	key, err := r.ensureKey(ctx, m, nil)
	if err != nil {
		return "", nil, err
	}
	var held corev1.Secret
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.CACertsSecret}, &held)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", nil, err
	}
	exists := err == nil
	var public corev1.ConfigMap
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.IntermediateConfigMap}, &public)
	if apierrors.IsNotFound(err) {
		if exists && metav1.IsControlledBy(&held, m) {
			// The hub took its certificates back: the member left the federation. (A
			// meshfed-cacerts this Mesh does not control was written by a hub of an earlier
			// version: it serves until the hub's first answer replaces it.)
			if err := client.IgnoreNotFound(r.Client.Delete(ctx, &held)); err != nil {
				return "", nil, err
			}
			return string(key.csr), nil, nil
		}
		if exists {
			return string(key.csr), &held, nil
		}
		return string(key.csr), nil, nil
	} else if err != nil {
		return "", nil, err
	}
	// The intermediate in use nears its end: a new key, which the hub signs in turn; the
	// old pair serves until then.
	if exists {
		if c, err := trust.ReadCACerts(&held); err == nil && trust.SameKey(c.Intermediate, key.signer) && pastRenewal(c.Intermediate, time.Now()) {
			if key, err = r.ensureKey(ctx, m, key); err != nil {
				return "", nil, err
			}
		}
	}
	data, err := trust.MemberCACerts(public.Data, key.signer, key.pem, held.Data)
	if errors.Is(err, trust.ErrOtherKey) {
		return string(key.csr), nil, fmt.Errorf("%w: %w", errWaitingForHub, err)
	} else if err != nil {
		r.Recorder.Eventf(&public, corev1.EventTypeWarning, meshv1.EventInvalidCACerts, "%v", err)
		if exists {
			return string(key.csr), &held, nil // keep serving what was good
		}
		return string(key.csr), nil, fmt.Errorf("%w: %w", errWaitingForHub, err)
	}
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: trust.CACertsSecret}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, want, func() error {
		if want.Labels == nil {
			want.Labels = map[string]string{}
		}
		want.Labels[meshv1.LabelManagedBy] = meshv1.ManagedByValue
		want.Labels[meshv1.LabelFederation] = public.Labels[meshv1.LabelFederation]
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[meshv1.AnnotationTrustBundleVersion] = public.Annotations[meshv1.AnnotationTrustBundleVersion]
		want.Type = corev1.SecretTypeTLS
		if !maps.EqualFunc(want.Data, data, func(a, b []byte) bool { return string(a) == string(b) }) {
			want.Data = data
		}
		return controllerutil.SetControllerReference(m, want, r.Client.Scheme())
	}); err != nil {
		return "", nil, fmt.Errorf("Secret %s/%s: %w", r.Namespace, trust.CACertsSecret, err)
	}
	return string(key.csr), want, nil
}

// pastRenewal tells whether an intermediate has used two thirds of its life: the member
// then makes a new key, as cert-manager would when renewing with rotationPolicy Always.
func pastRenewal(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotBefore.Add(life * 2 / 3))
}

// ensureKey reads the member's CA key and CSR, making them when they are missing or do not
// parse. With replace set, it makes a new key in place of that one. A CSR that no longer
// names this Mesh's cluster or trust domain is made again for the same key.
func (r *Reconciler) ensureKey(ctx context.Context, m *meshv1.Mesh, replace *caKey) (*caKey, error) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: trust.KeySecret}}
	var key *caKey
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, secret, func() error {
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels[meshv1.LabelManagedBy] = meshv1.ManagedByValue
		secret.Type = corev1.SecretTypeOpaque
		key = parseKey(secret.Data[trust.KeyKey])
		if key == nil || replace != nil {
			k, err := trust.NewIntermediateKey()
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				return err
			}
			key = &caKey{signer: k, pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
		} else if _, err := trust.CheckIntermediateRequest(secret.Data[trust.KeyRequest], m.Spec.ClusterName, m.Spec.TrustDomainOrDefault()); err == nil &&
			trust.RequestFor(secret.Data[trust.KeyRequest], key.signer) {
			key.csr = secret.Data[trust.KeyRequest]
			return controllerutil.SetControllerReference(m, secret, r.Client.Scheme())
		}
		csr, err := trust.IntermediateCSR(key.signer, m.Spec.ClusterName, m.Spec.TrustDomainOrDefault())
		if err != nil {
			return err
		}
		key.csr = csr
		secret.Data = map[string][]byte{trust.KeyKey: key.pem, trust.KeyRequest: csr}
		return controllerutil.SetControllerReference(m, secret, r.Client.Scheme())
	})
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", r.Namespace, trust.KeySecret, err)
	}
	return key, nil
}

// parseKey reads a PKCS #8 PEM key; nil when it does not parse.
func parseKey(data []byte) *caKey {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil
	}
	return &caKey{signer: signer, pem: data}
}
