package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	meshfedcrd "github.com/meshfed/meshfed/config/crd"
	gatewayapi "github.com/meshfed/meshfed/config/gateway-api"
)

// crdManifests returns the CRDs every testbed cluster gets: meshfed's, the MCS API's,
// the Gateway API routes' (config/gateway-api) and cert-manager's.
func crdManifests(repoRoot string) ([][]byte, error) {
	docs := [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD}
	for _, crds := range []fs.FS{meshfedcrd.Bases, gatewayapi.CRDs} {
		err := fs.WalkDir(crds, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := fs.ReadFile(crds, path)
			docs = append(docs, data)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	dir, err := certManagerCRDDir(repoRoot)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no cert-manager CRDs in %s", dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs = append(docs, data)
	}
	return docs, nil
}

// certManagerCRDDir finds deploy/crds in the cert-manager module the project requires.
func certManagerCRDDir(repoRoot string) (string, error) {
	if dir := os.Getenv("MESHFED_CERT_MANAGER_CRDS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate the cert-manager module (set MESHFED_CERT_MANAGER_CRDS to its deploy/crds to skip this): %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds"), nil
}

// installCRDs creates (or updates) the CRDs and waits until the API server serves them.
func installCRDs(ctx context.Context, c client.Client, manifests [][]byte) error {
	var names []string
	for _, m := range manifests {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(m), 4096)
		for {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := dec.Decode(&crd); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("decode CRD: %w", err)
			}
			if crd.Name == "" {
				continue
			}
			if err := createOrUpdate(ctx, c, &crd); err != nil {
				return fmt.Errorf("install CRD %s: %w", crd.Name, err)
			}
			names = append(names, crd.Name)
		}
	}
	for _, name := range names {
		err := PollEvery(ctx, 30*time.Second, 50*time.Millisecond, "CRD "+name+" established", func(ctx context.Context) error {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return errors.New("not established yet")
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func createOrUpdate(ctx context.Context, c client.Client, crd *apiextensionsv1.CustomResourceDefinition) error {
	err := c.Create(ctx, crd)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	var existing apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKeyFromObject(crd), &existing); err != nil {
		return err
	}
	crd.ResourceVersion = existing.ResourceVersion
	return c.Update(ctx, crd)
}

// InstallCRDs installs more CRDs into the cluster (the OLM CRDs, say) and waits until
// they are served.
func (c *Cluster) InstallCRDs(ctx context.Context, crds ...*apiextensionsv1.CustomResourceDefinition) error {
	var manifests [][]byte
	for _, crd := range crds {
		raw, err := json.Marshal(crd)
		if err != nil {
			return err
		}
		manifests = append(manifests, raw)
	}
	return installCRDs(ctx, c.Client, manifests)
}
