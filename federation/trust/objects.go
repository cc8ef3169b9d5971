package trust

import (
	"fmt"
	"maps"
	"strconv"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Names of what the federation and its members write.
const (
	// CACertsSecret is the Secret each member's operator keeps in its mesh namespace: its
	// intermediate CA (key included) and the trust bundle.
	CACertsSecret = "meshfed-cacerts"
	// KeySecret is where a member's operator keeps the key of its intermediate CA and the
	// CSR it publishes for it.
	KeySecret = "meshfed-ca-key"
	// IntermediateConfigMap is what the hub writes into a member: the signed intermediate,
	// the root and the trust bundle, public material only (PublicData).
	IntermediateConfigMap = "meshfed-intermediate"
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
	// KeyRequest holds the member's CSR, in KeySecret.
	KeyRequest = "csr.pem"
)

// Default lifetimes when the spec leaves them out (the CRD defaults them too).
const (
	DefaultIntermediateDuration    = 720 * time.Hour
	DefaultIntermediateRenewBefore = 240 * time.Hour
	DefaultPropagationDelay        = 60 * time.Second
	rootDuration                   = 10 * 365 * 24 * time.Hour
)

// PropagationDelay is how long a rotation stage waits once every member reports it done.
func PropagationDelay(f *meshv1.MeshFederation) time.Duration {
	if d := f.Spec.Trust.Rotation.PropagationDelay; d != nil {
		return d.Duration
	}
	return DefaultPropagationDelay
}

// BootstrapIssuerName is the self-signed Issuer that signs a bootstrapped root.
func BootstrapIssuerName(fed string) string { return fed + "-selfsigned" }

// generationSuffix tells generations apart in names; generation 0 has none.
func generationSuffix(gen int32) string {
	if gen == 0 {
		return ""
	}
	return fmt.Sprintf("-g%d", gen)
}

// RootName names a bootstrapped root's Certificate, its Secret and the CA Issuer it backs.
func RootName(fed string, gen int32) string { return fed + "-root-ca" + generationSuffix(gen) }

// IntermediateName is the name prefix of a member's intermediate CertificateRequests in the
// hub.
func IntermediateName(fed, member string, gen int32) string {
	return fed + "-" + member + "-ca" + generationSuffix(gen)
}

// KindSelfSigned is the RootRef issuer kind of a bootstrapped root.
const KindSelfSigned = "SelfSigned"

// DesiredRoot is the root the spec asks for; its generation and fingerprint are unset.
func DesiredRoot(f *meshv1.MeshFederation) meshv1.RootRef {
	want := meshv1.RootRef{IssuerKind: KindSelfSigned, Revision: f.Spec.Trust.Rotation.Revision}
	if ref := f.Spec.Trust.IssuerRef; ref != nil {
		want.IssuerKind, want.IssuerName = ref.Kind, ref.Name
		if want.IssuerKind == "" {
			want.IssuerKind = cmapi.IssuerKind
		}
	}
	return want
}

// SameSource tells whether two root references name the same issuer and revision.
func SameSource(a, b meshv1.RootRef) bool {
	return a.IssuerKind == b.IssuerKind && a.IssuerName == b.IssuerName && a.Revision == b.Revision
}

// Describe names a root for messages: its issuer, revision and fingerprint.
func Describe(r meshv1.RootRef) string {
	s := "the bootstrapped root"
	if r.IssuerKind != KindSelfSigned {
		s = r.IssuerKind + " " + r.IssuerName
	}
	if r.Revision != "" {
		s += " (revision " + r.Revision + ")"
	}
	if r.Fingerprint != "" {
		s += fmt.Sprintf(" [%.16s]", r.Fingerprint)
	}
	return s
}

// RootIssuer is the issuer that signs the intermediates of a root generation.
func RootIssuer(f *meshv1.MeshFederation, root meshv1.RootRef) cmmeta.IssuerReference {
	if root.IssuerKind == KindSelfSigned {
		return cmmeta.IssuerReference{Name: RootName(f.Name, root.Generation), Kind: cmapi.IssuerKind, Group: "cert-manager.io"}
	}
	group := "cert-manager.io"
	if ref := f.Spec.Trust.IssuerRef; ref != nil && ref.Group != "" && ref.Name == root.IssuerName {
		group = ref.Group
	}
	return cmmeta.IssuerReference{Name: root.IssuerName, Kind: root.IssuerKind, Group: group}
}

// Bootstrap returns the cert-manager objects of a bootstrapped root generation, in the
// order they are needed: a self-signed Issuer, the root CA Certificate, and the CA Issuer
// it backs.
func Bootstrap(f *meshv1.MeshFederation, gen int32, labels map[string]string) (*cmapi.Issuer, *cmapi.Certificate, *cmapi.Issuer) {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: f.Namespace, Name: name, Labels: labels}
	}
	selfSigned := &cmapi.Issuer{ObjectMeta: meta(BootstrapIssuerName(f.Name)),
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}}
	name := RootName(f.Name, gen)
	root := &cmapi.Certificate{ObjectMeta: meta(name), Spec: cmapi.CertificateSpec{
		IsCA:       true,
		CommonName: fmt.Sprintf("meshfed root %s/%s%s", f.Namespace, f.Name, generationSuffix(gen)),
		SecretName: name,
		Duration:   &metav1.Duration{Duration: rootDuration},
		PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
		Usages:     []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
		IssuerRef:  cmmeta.IssuerReference{Name: selfSigned.Name, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
	}}
	ca := &cmapi.Issuer{ObjectMeta: meta(name),
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: root.Spec.SecretName}}}}
	return selfSigned, root, ca
}

// IntermediateRequest is the CertificateRequest that has the root issuer sign a member's
// intermediate CSR under a root generation. Its name is generated: a renewal or a new key
// is a new request, and the one in use stays until its successor is issued.
func IntermediateRequest(f *meshv1.MeshFederation, member, requestSHA string, csr []byte, root meshv1.RootRef, labels map[string]string) *cmapi.CertificateRequest {
	l := maps.Clone(labels)
	l[meshv1.LabelMember] = member
	l[meshv1.LabelRootGeneration] = strconv.Itoa(int(root.Generation))
	return &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, GenerateName: IntermediateName(f.Name, member, root.Generation) + "-",
			Labels: l, Annotations: map[string]string{meshv1.AnnotationRequestSHA256: requestSHA}},
		Spec: cmapi.CertificateRequestSpec{
			Request:   csr,
			IsCA:      true,
			Duration:  &metav1.Duration{Duration: IntermediateDuration(f)},
			Usages:    []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
			IssuerRef: RootIssuer(f, root),
		},
	}
}

// IntermediateDuration is the lifetime of members' intermediates.
func IntermediateDuration(f *meshv1.MeshFederation) time.Duration {
	if d := f.Spec.Trust.IntermediateDuration; d != nil {
		return d.Duration
	}
	return DefaultIntermediateDuration
}

// IntermediateRenewBefore is how long before expiry the hub has an intermediate signed anew.
func IntermediateRenewBefore(f *meshv1.MeshFederation) time.Duration {
	if r := f.Spec.Trust.IntermediateRenewBefore; r != nil {
		return r.Duration
	}
	return DefaultIntermediateRenewBefore
}
