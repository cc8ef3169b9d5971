package bundles_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/crds"
	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/bundles"
	"github.com/meshfed/meshfed/operator/webhook/webhooktest"
	"github.com/meshfed/meshfed/testbed"
)

const csvFile = "manifests/" + bundles.Package + ".clusterserviceversion.yaml"

// versions are the committed bundles.
func versions(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(bundles.Package)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(bundles.Package, e.Name()))
		}
	}
	if len(out) == 0 {
		t.Fatal("no bundle under bundles/meshfed: run make bundle")
	}
	return out
}

// validate runs what `operator-sdk bundle validate --select-optional
// suite=operatorframework` runs, on the library of operator-framework/api, plus the
// metadata checks of the bundle format.
func validate(dir string) (errs, warnings []string) {
	b, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		return []string{"load: " + err.Error()}, nil
	}
	objs := append(b.ObjectsToValidate(), map[string]string{"k8s-version": "1.30"})
	validators := slices.Concat(validation.DefaultBundleValidators, interfaces.Validators{
		validation.OperatorHubV2Validator, validation.StandardCapabilitiesValidator, validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator, validation.GoodPracticesValidator,
	})
	for _, v := range validators {
		for _, r := range v.Validate(objs...) {
			for _, e := range r.Errors {
				errs = append(errs, e.Error())
			}
			for _, w := range r.Warnings {
				warnings = append(warnings, w.Error())
			}
		}
	}
	return append(errs, checkMetadata(dir)...), warnings
}

// checkMetadata checks metadata/annotations.yaml as the bundle format validator does.
func checkMetadata(dir string) []string {
	raw, err := os.ReadFile(filepath.Join(dir, "metadata", "annotations.yaml"))
	if err != nil {
		return []string{err.Error()}
	}
	var doc struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return []string{"annotations.yaml: " + err.Error()}
	}
	var errs []string
	for _, k := range []string{
		"operators.operatorframework.io.bundle.mediatype.v1", "operators.operatorframework.io.bundle.manifests.v1",
		"operators.operatorframework.io.bundle.metadata.v1", "operators.operatorframework.io.bundle.package.v1",
		"operators.operatorframework.io.bundle.channels.v1",
	} {
		if doc.Annotations[k] == "" {
			errs = append(errs, "annotations.yaml lacks "+k)
		}
	}
	if m := doc.Annotations["operators.operatorframework.io.bundle.mediatype.v1"]; m != "" && m != "registry+v1" {
		errs = append(errs, "media type "+m+", want registry+v1")
	}
	return errs
}

func TestBundlePassesValidators(t *testing.T) {
	for _, dir := range versions(t) {
		errs, warnings := validate(dir)
		for _, w := range warnings {
			t.Logf("%s: %s", dir, w)
		}
		for _, e := range errs {
			t.Errorf("%s: %s", dir, e)
		}
	}
}

// TestBrokenBundlesFail proves the validation catches what it must: each case breaks a
// copy of the bundle.
func TestBrokenBundlesFail(t *testing.T) {
	src := versions(t)[0]
	cases := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		want    string
	}{
		{"owned CRD missing", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "manifests", "meshpeers.meshfed.io.yaml")))
		}, `owned CRD "meshfed.io/v1alpha1, Kind=MeshPeer" not found`},
		{"alm-example of a kind the bundle does not own", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) {
				ann := csv["metadata"].(map[string]any)["annotations"].(map[string]any)
				ann["alm-examples"] = `[{"apiVersion":"meshfed.io/v1alpha1","kind":"Gateway","metadata":{"name":"x"},"spec":{}}]`
			})
		}, "provided API"},
		{"alm-examples not JSON", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) {
				csv["metadata"].(map[string]any)["annotations"].(map[string]any)["alm-examples"] = `[{"kind": `
			})
		}, "invalid example"},
		{"version not semver", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) { csv["spec"].(map[string]any)["version"] = "latest" })
		}, "load"},
		{"icon of an unknown media type", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) {
				csv["spec"].(map[string]any)["icon"] = []any{map[string]any{"base64data": "AAAA", "mediatype": "image/bmp"}}
			})
		}, "does not have a valid mediatype"},
		{"maintainer without a valid email", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) {
				csv["spec"].(map[string]any)["maintainers"] = []any{map[string]any{"name": "x", "email": "not-an-address"}}
			})
		}, "email not-an-address is invalid"},
		{"unknown category", func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv map[string]any) {
				csv["metadata"].(map[string]any)["annotations"].(map[string]any)["categories"] = "Networking,Meshes"
			})
		}, "not in the set of standard categories"},
		{"package annotation missing", func(t *testing.T, dir string) {
			path := filepath.Join(dir, "metadata", "annotations.yaml")
			raw, err := os.ReadFile(path)
			must(t, err)
			var lines []string
			for _, l := range strings.Split(string(raw), "\n") {
				if !strings.Contains(l, "bundle.package.v1") {
					lines = append(lines, l)
				}
			}
			must(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644))
		}, "package.v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, os.CopyFS(dir, os.DirFS(src)))
			tc.breakIt(t, dir)
			errs, _ := validate(dir)
			if len(errs) == 0 {
				t.Fatal("the broken bundle passes")
			}
			joined := strings.Join(errs, "\n")
			if !strings.Contains(joined, tc.want) {
				t.Errorf("errors %q do not mention %q", joined, tc.want)
			}
			t.Logf("caught: %s", joined)
		})
	}
}

// TestBundleOnAPIServer applies the CSV to a real API server with OLM's CRDs, and every
// alm-example to our CRDs behind our webhooks.
func TestBundleOnAPIServer(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := context.Background()
	must(t, c.InstallCRDs(ctx, crds.ClusterServiceVersion(), crds.OperatorGroup(), crds.Subscription(), crds.CatalogSource(), crds.InstallPlan()))
	webhooktest.Serve(t, c, "..")
	const ns = "meshfed-system"
	testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	for _, dir := range versions(t) {
		raw, err := os.ReadFile(filepath.Join(dir, csvFile))
		must(t, err)
		csv := &unstructured.Unstructured{}
		must(t, yaml.Unmarshal(raw, &csv.Object))
		csv.SetNamespace(ns)
		if err := c.Client.Create(ctx, csv); err != nil {
			t.Fatalf("%s: the CSV is refused by OLM's schema: %v", dir, err)
		}
		var examples []map[string]any
		must(t, json.Unmarshal([]byte(csv.GetAnnotations()["alm-examples"]), &examples))
		if len(examples) == 0 {
			t.Fatalf("%s: no alm-examples", dir)
		}
		for _, ex := range examples {
			obj := &unstructured.Unstructured{Object: ex}
			if obj.GetKind() != "Mesh" { // namespaced: the user picks the namespace
				obj.SetNamespace(ns)
			}
			if err := c.Client.Create(ctx, obj, client.DryRunAll); err != nil {
				t.Errorf("%s: alm-example %s %s refused: %v", dir, obj.GetKind(), obj.GetName(), err)
			}
		}
		for _, f := range []string{"manifests", "metadata"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestCatalogListsEveryBundle checks the catalog against the bundles.
func TestCatalogListsEveryBundle(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("catalog", bundles.Package, "catalog.yaml"))
	must(t, err)
	docs := map[string][]map[string]any{}
	for _, d := range strings.Split(string(raw), "\n---\n") {
		var m map[string]any
		must(t, yaml.Unmarshal([]byte(d), &m))
		docs[m["schema"].(string)] = append(docs[m["schema"].(string)], m)
	}
	if len(docs["olm.package"]) != 1 || docs["olm.package"][0]["defaultChannel"] != bundles.Channel {
		t.Errorf("olm.package %v", docs["olm.package"])
	}
	bundlesInCatalog := map[string]bool{}
	for _, b := range docs["olm.bundle"] {
		bundlesInCatalog[b["name"].(string)] = true
	}
	for _, dir := range versions(t) {
		name := bundles.Package + ".v" + filepath.Base(dir)
		if !bundlesInCatalog[name] {
			t.Errorf("%s is not in the catalog (run make catalog); catalog has %v", name, slices.Sorted(maps.Keys(bundlesInCatalog)))
		}
	}
	if len(docs["olm.channel"]) != 1 || len(docs["olm.channel"][0]["entries"].([]any)) != len(bundlesInCatalog) {
		t.Errorf("olm.channel %v", docs["olm.channel"])
	}
}

func editCSV(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, csvFile)
	raw, err := os.ReadFile(path)
	must(t, err)
	var csv map[string]any
	must(t, yaml.Unmarshal(raw, &csv))
	edit(csv)
	out, err := yaml.Marshal(csv)
	must(t, err)
	must(t, os.WriteFile(path, out, 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
