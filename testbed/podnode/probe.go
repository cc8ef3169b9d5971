package podnode

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// probe runs the container's startup, liveness and readiness probes for one running
// instance until ctx ends, as a kubelet does: the startup probe first, then the other
// two; a failed liveness (or startup) probe kills the instance, readiness sets Ready.
func (c *container) probe(ctx context.Context, proc *os.Process) {
	if c.spec.StartupProbe != nil {
		if !c.probeUntil(ctx, "Startup", c.spec.StartupProbe, true) {
			if ctx.Err() == nil {
				c.kill(proc, "startup")
			}
			return
		}
		c.update(func(s *corev1.ContainerStatus) { s.Started = ptr.To(true) })
	}
	if c.spec.ReadinessProbe == nil {
		c.update(func(s *corev1.ContainerStatus) { s.Ready = s.State.Running != nil })
	}
	done := make(chan struct{})
	if p := c.spec.LivenessProbe; p != nil {
		go func() {
			defer close(done)
			if !c.probeUntil(ctx, "Liveness", p, false) && ctx.Err() == nil {
				c.kill(proc, "liveness")
			}
		}()
	} else {
		close(done)
	}
	if p := c.spec.ReadinessProbe; p != nil {
		c.readiness(ctx, p)
	}
	<-done
}

// kill ends an instance whose probe failed; its restart policy decides what follows.
func (c *container) kill(proc *os.Process, probe string) {
	c.pod.event(corev1.EventTypeNormal, "Killing", fmt.Sprintf("Container %s failed %s probe, will be restarted", c.spec.Name, probe))
	_ = proc.Kill()
}

// probeUntil probes every period. untilSuccess (startup) returns true on the first
// success and false after failureThreshold failures in a row; otherwise (liveness) it
// returns false after failureThreshold failures, and never true.
func (c *container) probeUntil(ctx context.Context, kind string, p *corev1.Probe, untilSuccess bool) bool {
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	failures := 0
	for {
		err := c.probeOnce(ctx, p)
		if ctx.Err() != nil {
			return false
		}
		switch {
		case err == nil && untilSuccess:
			return true
		case err == nil:
			failures = 0
		default:
			failures++
			c.pod.event(corev1.EventTypeWarning, "Unhealthy", fmt.Sprintf("%s probe failed: %v", kind, err))
			if failures >= int(threshold(p.FailureThreshold, 3)) {
				return false
			}
		}
		if !sleepCtx(ctx, period(p)) {
			return false
		}
	}
}

// readiness sets Ready from the readiness probe until ctx ends.
func (c *container) readiness(ctx context.Context, p *corev1.Probe) {
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return
	}
	successes, failures := 0, 0
	ready := false
	for {
		err := c.probeOnce(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
			if !ready && successes >= int(threshold(p.SuccessThreshold, 1)) {
				ready = true
				c.update(func(s *corev1.ContainerStatus) { s.Ready = s.State.Running != nil })
			}
		} else {
			successes, failures = 0, failures+1
			if ready && failures >= int(threshold(p.FailureThreshold, 3)) || !ready && failures == 1 {
				c.pod.event(corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: "+err.Error())
			}
			if ready && failures >= int(threshold(p.FailureThreshold, 3)) {
				ready = false
				c.update(func(s *corev1.ContainerStatus) { s.Ready = false })
			}
		}
		if !sleepCtx(ctx, period(p)) {
			return
		}
	}
}

func threshold(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

func period(p *corev1.Probe) time.Duration {
	return time.Duration(threshold(p.PeriodSeconds, 10)) * time.Second
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// probeOnce runs one httpGet, tcpSocket or grpc probe against the pod's address.
func (c *container) probeOnce(ctx context.Context, p *corev1.Probe) error {
	timeout := time.Duration(threshold(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ip := c.pod.sandbox.ip.String()
	switch {
	case p.HTTPGet != nil:
		port, err := c.port(p.HTTPGet.Port)
		if err != nil {
			return err
		}
		host := ip
		if p.HTTPGet.Host != "" {
			host = p.HTTPGet.Host
		}
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		// A kubelet does not verify a probe's certificate.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(ip, strconv.Itoa(int(p.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ptr.Deref(p.GRPC.Service, "")})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("service unhealthy (responded with %q)", resp.GetStatus())
		}
		return nil
	}
	return fmt.Errorf("probe has no handler")
}

// port resolves a probe's port, by number or by the name of a container port.
func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container has no port named %q", p.StrVal)
}
