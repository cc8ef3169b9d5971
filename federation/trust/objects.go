package trust

import (
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Names of what the federation writes.
const (
	// CACertsSecret is the Secret each member gets in its mesh namespace.
	CACertsSecret = "meshfed-cacerts"
	// MemberIssuer is the member's cert-manager CA Issuer, backed by CACertsSecret.
	MemberIssuer = "meshfed-ca"
)

// Keys of the meshfed-cacerts Secret.
const (
	// KeyCert holds the member's intermediate CA certificate followed by any CA between it
	// and the root (not the root): the CA Issuer signs with it and serves it as the chain.
	KeyCert = "tls.crt"
	// KeyKey holds the intermediate's private key.
	KeyKey = "tls.key"
	// KeyRoot holds the root the intermediate chains to.
	KeyRoot = "ca.crt"
	// KeyChain holds the intermediate and everything above it, root included.
	KeyChain = "cert-chain.pem"
	// KeyBundle holds every root the federation currently trusts.
	KeyBundle = "trust-bundle.pem"
)

// Default lifetimes when the spec leaves them out (the CRD defaults them too).
const (
	DefaultIntermediateDuration    = 720 * time.Hour
	DefaultIntermediateRenewBefore = 240 * time.Hour
	rootDuration                   = 10 * 365 * 24 * time.Hour
)

// BootstrapIssuerName is the self-signed Issuer that signs a bootstrapped root.
func BootstrapIssuerName(fed string) string { return fed + "-selfsigned" }

// RootName names a bootstrapped root's Certificate, its Secret and the CA Issuer it backs.
func RootName(fed string) string { return fed + "-root-ca" }

// IntermediateName names a member's intermediate Certificate and its Secret in the hub.
func IntermediateName(fed, member string) string { return fed + "-" + member + "-ca" }

// RootIssuer is the issuer that signs the members' intermediates.
func RootIssuer(f *meshv1.MeshFederation) cmmeta.IssuerReference {
	if ref := f.Spec.Trust.IssuerRef; ref != nil {
		kind, group := ref.Kind, ref.Group
		if kind == "" {
			kind = cmapi.IssuerKind
		}
		if group == "" {
			group = "cert-manager.io"
		}
		return cmmeta.IssuerReference{Name: ref.Name, Kind: kind, Group: group}
	}
	return cmmeta.IssuerReference{Name: RootName(f.Name), Kind: cmapi.IssuerKind, Group: "cert-manager.io"}
}

// Bootstrap returns the cert-manager objects of a bootstrapped root, in the order they
// are needed: a self-signed Issuer, the root CA Certificate, and the CA Issuer it backs.
func Bootstrap(f *meshv1.MeshFederation, labels map[string]string) (*cmapi.Issuer, *cmapi.Certificate, *cmapi.Issuer) {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: f.Namespace, Name: name, Labels: labels}
	}
	selfSigned := &cmapi.Issuer{ObjectMeta: meta(BootstrapIssuerName(f.Name)),
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}}
	root := &cmapi.Certificate{ObjectMeta: meta(RootName(f.Name)), Spec: cmapi.CertificateSpec{
		IsCA:       true,
		CommonName: fmt.Sprintf("meshfed root %s/%s", f.Namespace, f.Name),
		SecretName: RootName(f.Name),
		Duration:   &metav1.Duration{Duration: rootDuration},
		PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
		Usages:     []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
		IssuerRef:  cmmeta.IssuerReference{Name: selfSigned.Name, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
	}}
	ca := &cmapi.Issuer{ObjectMeta: meta(RootName(f.Name)),
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: root.Spec.SecretName}}}}
	return selfSigned, root, ca
}

// Intermediate is the CA Certificate of one member, signed by the federation's root.
func Intermediate(f *meshv1.MeshFederation, member string, labels map[string]string) *cmapi.Certificate {
	duration, renew := DefaultIntermediateDuration, DefaultIntermediateRenewBefore
	if d := f.Spec.Trust.IntermediateDuration; d != nil {
		duration = d.Duration
	}
	if r := f.Spec.Trust.IntermediateRenewBefore; r != nil {
		renew = r.Duration
	}
	name := IntermediateName(f.Name, member)
	return &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: name, Labels: labels},
		Spec: cmapi.CertificateSpec{
			IsCA:        true,
			CommonName:  fmt.Sprintf("meshfed intermediate %s", member),
			SecretName:  name,
			Duration:    &metav1.Duration{Duration: duration},
			RenewBefore: &metav1.Duration{Duration: renew},
			PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
			Usages:      []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
			IssuerRef:   RootIssuer(f),
		},
	}
}
