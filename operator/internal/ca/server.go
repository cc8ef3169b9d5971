package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/trust"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Labels of the CertificateRequests the CA service makes: the pod they are for. The
// latest request of each pod stays (the Mesh counts them during a root rotation); older
// ones are deleted, and the Mesh controller deletes those of pods that are gone.
const (
	LabelPodNamespace = "meshfed.io/pod-namespace"
	LabelPodName      = "meshfed.io/pod-name"
	LabelPodUID       = "meshfed.io/pod-uid"
	// LabelComponent marks them as the CA service's.
	LabelComponent = "app.kubernetes.io/component"
	ComponentCA    = "meshfed-ca"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=get;list;watch;create;delete

// ServingSecret holds the certificate the CA service and the xDS server present (the Mesh
// controller has cert-manager issue it from the member's CA).
const ServingSecret = "meshfed-control-plane-tls"

// maxBody bounds a request body: a CSR is a few hundred bytes. maxInFlight bounds the
// requests served at once (each costs a TokenReview and a CertificateRequest); more are
// told to come back.
const (
	maxBody     = 64 << 10
	maxInFlight = 64
)

// Server is the member's CA service (a manager.Runnable on every replica): it signs a
// workload's CSR for the SPIFFE ID of the pod whose token comes with it, through a
// cert-manager CertificateRequest against the member's CA Issuer.
type Server struct {
	// Client reads the Mesh, meshfed-cacerts, the serving Secret and CertificateRequests
	// from the cache, and writes TokenReviews and CertificateRequests.
	Client client.Client
	// Pods reads pods from the API server (they are not cached).
	Pods client.Reader
	// Namespace is the mesh namespace: the CA Issuer, meshfed-cacerts, the requests.
	Namespace string
	// Addr is where it listens (":15012").
	Addr string
	// TLS gives the serving certificate.
	TLS *TLSSource
	Log logr.Logger
}

// NeedLeaderElection is false: every replica signs.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("CA service: %w", err)
	}
	mux := http.NewServeMux()
	inFlight := make(chan struct{}, maxInFlight)
	mux.HandleFunc("POST "+caapi.Path, func(w http.ResponseWriter, r *http.Request) {
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
			s.sign(w, r)
		default:
			refused.WithLabelValues("Busy").Inc()
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, caapi.Refusal{Reason: "Busy", Message: fmt.Sprintf("the CA serves %d requests at once; try again", maxInFlight)})
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.TLS.Certificate}}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ServeTLS(lis, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) sign(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	resp, caller, err := s.handle(r)
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		refused.WithLabelValues(refusal.Reason).Inc()
		s.Log.Info("refused a certificate request", "reason", refusal.Reason, "message", refusal.Message,
			"namespace", caller.Namespace, "serviceAccount", caller.ServiceAccount, "pod", caller.PodName, "remote", r.RemoteAddr)
		writeJSON(w, refusal.Status, refusal.Body())
	case err != nil:
		failed.Inc()
		s.Log.Error(err, "signing failed", "namespace", caller.Namespace, "pod", caller.PodName)
		writeJSON(w, http.StatusServiceUnavailable, caapi.Refusal{Reason: "SigningFailed", Message: err.Error()})
	default:
		signed.Inc()
		signSeconds.Observe(time.Since(start).Seconds())
		writeJSON(w, http.StatusOK, resp)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// handle authenticates the caller, checks its request and has it signed. A *Refusal is
// the caller's fault; any other error is the service's.
func (s *Server) handle(r *http.Request) (*caapi.SignResponse, Caller, error) {
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil, Caller{}, refuse(http.StatusUnauthorized, "NoToken", "send a projected service-account token with audience %q as \"Authorization: Bearer <token>\"", caapi.Audience)
	}
	var req caapi.SignRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, Caller{}, refuse(http.StatusBadRequest, "MalformedRequest", "the body must be a SignRequest in JSON (at most %d bytes): %v", maxBody, err)
	}
	review := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{caapi.Audience}}}
	if err := s.Client.Create(ctx, review); err != nil {
		return nil, Caller{}, fmt.Errorf("TokenReview: %w", err)
	}
	caller, refusal := CallerOf(review.Status)
	if refusal != nil {
		return nil, caller, refusal
	}
	if err := s.checkPod(ctx, caller); err != nil {
		return nil, caller, err
	}
	var mesh meshv1.Mesh
	if err := s.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); err != nil {
		return nil, caller, fmt.Errorf("read the Mesh: %w", err)
	}
	if _, refusal := CheckCSR([]byte(req.CSR), caller.SPIFFEID(mesh.Spec.TrustDomainOrDefault())); refusal != nil {
		return nil, caller, refusal
	}
	lifetime, refusal := Lifetime(req.LifetimeSeconds)
	if refusal != nil {
		return nil, caller, refusal
	}
	resp, err := s.issue(ctx, caller, []byte(req.CSR), lifetime)
	return resp, caller, err
}

// checkPod refuses a token whose pod is gone, is being deleted, or is another pod of the
// same name, or runs under another service account.
func (s *Server) checkPod(ctx context.Context, c Caller) error {
	var pod corev1.Pod
	err := s.Pods.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.PodName}, &pod)
	if apierrors.IsNotFound(err) {
		return refuse(http.StatusForbidden, "PodGone", "pod %s/%s, which the token is bound to, does not exist", c.Namespace, c.PodName)
	}
	if err != nil {
		return fmt.Errorf("read pod %s/%s: %w", c.Namespace, c.PodName, err)
	}
	switch {
	case string(pod.UID) != c.PodUID:
		return refuse(http.StatusForbidden, "PodGone", "the token is bound to an earlier pod named %s/%s", c.Namespace, c.PodName)
	case pod.DeletionTimestamp != nil:
		return refuse(http.StatusForbidden, "PodGone", "pod %s/%s is being deleted", c.Namespace, c.PodName)
	case pod.Spec.ServiceAccountName != c.ServiceAccount:
		return refuse(http.StatusForbidden, "IdentityMismatch", "pod %s/%s runs as %s, not %s", c.Namespace, c.PodName, pod.Spec.ServiceAccountName, c.ServiceAccount)
	}
	return nil
}

// issue has cert-manager sign csr with the member's CA Issuer and waits for the result.
func (s *Server) issue(ctx context.Context, c Caller, csr []byte, lifetime time.Duration) (*caapi.SignResponse, error) {
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, GenerateName: "workload-",
			Labels: map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, LabelComponent: ComponentCA,
				LabelPodNamespace: c.Namespace, LabelPodName: c.PodName, LabelPodUID: c.PodUID}},
		Spec: cmapi.CertificateRequestSpec{
			Request:   csr,
			Duration:  &metav1.Duration{Duration: lifetime},
			IssuerRef: cmmeta.IssuerReference{Name: trust.MemberIssuer, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
			Usages:    []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageServerAuth, cmapi.UsageClientAuth},
		},
	}
	if err := s.Client.Create(ctx, cr); err != nil {
		return nil, fmt.Errorf("create a CertificateRequest: %w", err)
	}
	issued, err := s.wait(ctx, client.ObjectKeyFromObject(cr))
	if err != nil {
		return nil, err
	}
	var secret corev1.Secret
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: trust.CACertsSecret}, &secret); err != nil {
		return nil, fmt.Errorf("read the trust bundle: %w", err)
	}
	held, err := trust.ReadCACerts(&secret)
	if err != nil {
		return nil, err
	}
	chain := issued.Status.Certificate
	if !bytes.Contains(chain, pemOf(held.Intermediate)) {
		chain = append(append(bytes.Clone(chain), '\n'), pemOf(held.Intermediate)...)
	}
	s.forgetOlder(ctx, issued)
	return &caapi.SignResponse{CertChain: string(chain), TrustBundle: string(held.Bundle.PEM())}, nil
}

// wait polls the cache until cert-manager has signed the request, or refused it.
func (s *Server) wait(ctx context.Context, key client.ObjectKey) (*cmapi.CertificateRequest, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		var cr cmapi.CertificateRequest
		err := s.Client.Get(ctx, key, &cr)
		if err == nil {
			for _, cond := range cr.Status.Conditions {
				if cond.Status != cmmeta.ConditionTrue {
					continue
				}
				switch cond.Type {
				case cmapi.CertificateRequestConditionDenied, cmapi.CertificateRequestConditionInvalidRequest:
					return nil, fmt.Errorf("CertificateRequest %s: %s: %s", key, cond.Reason, cond.Message)
				}
			}
			if len(cr.Status.Certificate) > 0 {
				return &cr, nil
			}
			if c := readyCondition(&cr); c != nil && c.Reason == cmapi.CertificateRequestReasonFailed {
				return nil, fmt.Errorf("CertificateRequest %s failed: %s", key, c.Message)
			}
		} else if !apierrors.IsNotFound(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("CertificateRequest %s not signed in time: is cert-manager running, and Issuer %s/%s ready?", key, s.Namespace, trust.MemberIssuer)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func readyCondition(cr *cmapi.CertificateRequest) *cmapi.CertificateRequestCondition {
	for i := range cr.Status.Conditions {
		if cr.Status.Conditions[i].Type == cmapi.CertificateRequestConditionReady {
			return &cr.Status.Conditions[i]
		}
	}
	return nil
}

// forgetOlder deletes the pod's earlier requests: only the latest is kept.
func (s *Server) forgetOlder(ctx context.Context, latest *cmapi.CertificateRequest) {
	var crs cmapi.CertificateRequestList
	if err := s.Client.List(ctx, &crs, client.InNamespace(s.Namespace), client.MatchingLabels{LabelPodUID: latest.Labels[LabelPodUID]}); err != nil {
		return
	}
	for i := range crs.Items {
		cr := &crs.Items[i]
		if cr.Name != latest.Name && !latest.CreationTimestamp.Before(&cr.CreationTimestamp) {
			_ = client.IgnoreNotFound(s.Client.Delete(ctx, cr))
		}
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
