package podnode

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// volumes are a pod's volumes, written under <pod dir>/volumes/<name>.
type volumes struct {
	dir    string
	paths  map[string]string // volume name → host directory
	tokens []*token
}

// token is a projected service-account token file and when it must be renewed.
type token struct {
	file           string // host path
	serviceAccount string
	audience       string
	expiration     int64
	mode           fs.FileMode
	renewAt        time.Time
}

// defaultTokenExpiration is a projected token's lifetime when the pod names none (the
// API's default).
const defaultTokenExpiration = 3600

// volumeWriter resolves a pod's volume sources through the API, as a kubelet does.
type volumeWriter struct {
	client kubernetes.Interface
	// renewAfter, when set, replaces the kubelet's renewal rule (80 % of a token's
	// lifetime, at most 24 h) so that tests can see a renewal within seconds.
	renewAfter time.Duration
	now        func() time.Time
}

// setup writes every volume of pod under dir.
func (w *volumeWriter) setup(ctx context.Context, pod *corev1.Pod, dir string) (*volumes, error) {
	v := &volumes{dir: dir, paths: map[string]string{}}
	for _, vol := range pod.Spec.Volumes {
		path := filepath.Join(dir, "volumes", vol.Name)
		// emptyDir is writable by every user, as a kubelet makes it.
		if err := os.MkdirAll(path, 0o777); err != nil {
			return nil, err
		}
		if err := os.Chmod(path, 0o777); err != nil {
			return nil, err
		}
		v.paths[vol.Name] = path
		if err := w.fill(ctx, pod, vol, path, v, true); err != nil {
			return nil, fmt.Errorf("volume %q: %w", vol.Name, err)
		}
	}
	return v, nil
}

// refresh writes again what changed in the pod's Secret, ConfigMap and downward API
// volumes, as a kubelet's periodic sync does (tokens have their own renewal; a subPath
// mount keeps what it had, as with a kubelet).
func (w *volumeWriter) refresh(ctx context.Context, pod *corev1.Pod, v *volumes) error {
	for _, vol := range pod.Spec.Volumes {
		if path, ok := v.paths[vol.Name]; ok {
			if err := w.fill(ctx, pod, vol, path, v, false); err != nil {
				return fmt.Errorf("volume %q: %w", vol.Name, err)
			}
		}
	}
	return nil
}

// fill writes one volume's files; first is the pod's start, when tokens are requested too.
func (w *volumeWriter) fill(ctx context.Context, pod *corev1.Pod, vol corev1.Volume, path string, v *volumes, first bool) error {
	src := vol.VolumeSource
	switch {
	case src.EmptyDir != nil:
		return nil
	case src.Secret != nil:
		return w.secret(ctx, pod.Namespace, path, src.Secret.SecretName, src.Secret.Items, src.Secret.Optional, modeOr(src.Secret.DefaultMode))
	case src.ConfigMap != nil:
		return w.configMap(ctx, pod.Namespace, path, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, modeOr(src.ConfigMap.DefaultMode))
	case src.DownwardAPI != nil:
		return writeDownward(pod, path, src.DownwardAPI.Items, modeOr(src.DownwardAPI.DefaultMode))
	case src.Projected != nil:
		mode := modeOr(src.Projected.DefaultMode)
		for _, p := range src.Projected.Sources {
			var err error
			switch {
			case p.Secret != nil:
				err = w.secret(ctx, pod.Namespace, path, p.Secret.Name, p.Secret.Items, p.Secret.Optional, mode)
			case p.ConfigMap != nil:
				err = w.configMap(ctx, pod.Namespace, path, p.ConfigMap.Name, p.ConfigMap.Items, p.ConfigMap.Optional, mode)
			case p.DownwardAPI != nil:
				err = writeDownward(pod, path, p.DownwardAPI.Items, mode)
			case p.ServiceAccountToken != nil && first:
				t := &token{
					file:           filepath.Join(path, p.ServiceAccountToken.Path),
					serviceAccount: pod.Spec.ServiceAccountName,
					audience:       p.ServiceAccountToken.Audience,
					expiration:     ptr.Deref(p.ServiceAccountToken.ExpirationSeconds, defaultTokenExpiration),
					mode:           mode,
				}
				err = w.renew(ctx, pod, t)
				v.tokens = append(v.tokens, t)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unsupported volume source") // refused by unsupported() before
}

func modeOr(m *int32) fs.FileMode {
	if m == nil {
		return 0o644
	}
	return fs.FileMode(*m) & fs.ModePerm
}

func itemMode(m *int32, def fs.FileMode) fs.FileMode {
	if m == nil {
		return def
	}
	return fs.FileMode(*m) & fs.ModePerm
}

func (w *volumeWriter) secret(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, optional *bool, mode fs.FileMode) error {
	s, err := w.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return writeKeys(dir, s.Data, items, optional, mode, "secret "+name)
}

func (w *volumeWriter) configMap(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, optional *bool, mode fs.FileMode) error {
	cm, err := w.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configmap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, val := range cm.Data {
		data[k] = []byte(val)
	}
	for k, val := range cm.BinaryData {
		data[k] = val
	}
	return writeKeys(dir, data, items, optional, mode, "configmap "+name)
}

// writeKeys writes data's keys as files: all of them, or the items asked for.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, optional *bool, mode fs.FileMode, what string) error {
	if len(items) == 0 {
		for k, val := range data {
			if err := writeFile(dir, k, val, mode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			if ptr.Deref(optional, false) {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		if err := writeFile(dir, it.Path, val, itemMode(it.Mode, mode)); err != nil {
			return err
		}
	}
	return nil
}

// writeDownward writes the downward API files: the pod's own metadata.
func writeDownward(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, mode fs.FileMode) error {
	for _, it := range items {
		if it.FieldRef == nil {
			return fmt.Errorf("downward API file %q: only fieldRef is supported", it.Path)
		}
		val, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return fmt.Errorf("downward API file %q: %w", it.Path, err)
		}
		if err := writeFile(dir, it.Path, []byte(val), itemMode(it.Mode, mode)); err != nil {
			return err
		}
	}
	return nil
}

// fieldValue is a downward API field of the pod, formatted as a kubelet writes it.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	formatMap := func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
		}
		return b.String()
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	if key, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(key, "']")], nil
	}
	if key, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(key, "']")], nil
	}
	return "", fmt.Errorf("field %q is not supported", path)
}

// writeFile replaces dir/rel atomically (readers never see half a file), refusing a
// path that would leave dir.
func writeFile(dir, rel string, data []byte, mode fs.FileMode) error {
	clean := filepath.Clean(rel)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("path %q leaves the volume", rel)
	}
	path := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			return nil // unchanged: readers that watch the file see no event
		}
	}
	tmp := filepath.Join(filepath.Dir(path), ".."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile applies the umask
		return err
	}
	return os.Rename(tmp, path)
}

// renew requests a token bound to the pod and writes it, and sets when to renew it next.
func (w *volumeWriter) renew(ctx context.Context, pod *corev1.Pod, t *token) error {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(t.expiration),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if t.audience != "" {
		req.Spec.Audiences = []string{t.audience}
	}
	issued := w.now()
	resp, err := w.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, t.serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %q: %w", t.serviceAccount, err)
	}
	if err := writeFile(filepath.Dir(t.file), filepath.Base(t.file), []byte(resp.Status.Token), t.mode); err != nil {
		return err
	}
	t.renewAt = issued.Add(renewAfter(resp.Status.ExpirationTimestamp.Sub(issued), w.renewAfter))
	return nil
}

// renewAfter is when a kubelet renews a token of lifetime ttl: at 80 % of it, and at
// least daily; override, when set, wins.
func renewAfter(ttl, override time.Duration) time.Duration {
	if override > 0 {
		return override
	}
	return min(ttl*8/10, 24*time.Hour)
}

// renewDue renews the tokens whose time has come.
func (w *volumeWriter) renewDue(ctx context.Context, pod *corev1.Pod, v *volumes) error {
	for _, t := range v.tokens {
		if w.now().Before(t.renewAt) {
			continue
		}
		if err := w.renew(ctx, pod, t); err != nil {
			return err
		}
	}
	return nil
}
