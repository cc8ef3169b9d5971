package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"
)

// RequestSHA256 identifies a member's CSR (hex SHA-256 of its PEM).
func RequestSHA256(csr []byte) string {
	sum := sha256.Sum256(csr)
	return hex.EncodeToString(sum[:])
}

// failedRetry is how long a request the issuer refused stays before the hub asks again:
// long enough not to flood the issuer, short enough that a fixed issuer is used soon.
const failedRetry = time.Minute

// Signing is one of a member's intermediate CertificateRequests, as the hub read it.
type Signing struct {
	Name        string
	RequestSHA  string
	Duration    time.Duration   // the lifetime it asked for
	CA          *IntermediateCA // set once issued and checked
	Invalid     error           // the issued certificate is unusable
	FailedSince time.Time       // the issuer refused it (denied, invalid, failed)
}

// SigningPlan is what the hub does with a member's requests under one root generation.
type SigningPlan struct {
	// Current is the intermediate the member gets (nil: none issued yet).
	Current *Signing
	// Create asks for a new request for the member's CSR.
	Create bool
	// Delete names the requests no longer needed.
	Delete []string
	// RenewAt is when Current needs a successor (zero when it has one or there is none).
	RenewAt time.Time
}

// PlanSigning decides, from a member's requests and its current CSR (wantSHA; empty while
// the member publishes none that passes CheckIntermediateRequest), which intermediate it
// gets and what to ask the issuer for. The intermediate in use stays until a successor is
// issued: for a new CSR (a new key), a new lifetime (duration), a renewal renewBefore
// ahead of expiry, or a root the issuer no longer signs with (root, when known: the
// issuer's key was replaced after this intermediate was signed).
func PlanSigning(reqs []Signing, wantSHA string, root *x509.Certificate, duration, renewBefore time.Duration, now time.Time) SigningPlan {
	var p SigningPlan
	for i := range reqs {
		if r := &reqs[i]; r.CA != nil && (p.Current == nil || newer(r.CA.Chain[0], p.Current.CA.Chain[0])) {
			p.Current = r // the last one signed: a successor may well expire sooner
		}
	}
	upToDate := p.Current != nil && p.Current.RequestSHA == wantSHA && p.Current.Duration == duration &&
		now.Before(p.Current.CA.NotAfter().Add(-renewBefore)) && p.Current.CA.ChainsTo(root)
	var pending *Signing
	for i := range reqs {
		r := &reqs[i]
		switch {
		case r == p.Current:
		case r.CA == nil && r.Invalid == nil && r.FailedSince.IsZero() && r.RequestSHA == wantSHA && r.Duration == duration && !upToDate:
			pending = r // waiting for the issuer
		case !r.FailedSince.IsZero() && r.RequestSHA == wantSHA && r.Duration == duration && !upToDate && now.Sub(r.FailedSince) < failedRetry:
			pending = r // refused: kept a while so that its reason shows
		default:
			p.Delete = append(p.Delete, r.Name)
		}
	}
	p.Create = wantSHA != "" && !upToDate && pending == nil
	if p.Current != nil && upToDate {
		p.RenewAt = p.Current.CA.NotAfter().Add(-renewBefore)
	}
	return p
}

// newer tells whether a was issued after b (by NotBefore, then NotAfter).
func newer(a, b *x509.Certificate) bool {
	if !a.NotBefore.Equal(b.NotBefore) {
		return a.NotBefore.After(b.NotBefore)
	}
	return a.NotAfter.After(b.NotAfter)
}
