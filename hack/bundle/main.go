// Command bundle writes meshfed's OLM bundle and catalog (`make bundle`, `make catalog`).
//
//	kustomize build config/manifests | go run ./hack/bundle bundle -version 0.1.0
//	go run ./hack/bundle catalog
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"

	"github.com/meshfed/meshfed/bundles"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bundle bundle -version X.Y.Z < rendered.yaml | bundle catalog")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "bundle":
		err = writeBundle(os.Args[2:])
	case "catalog":
		err = writeCatalog(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: use bundle or catalog", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func writeBundle(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ExitOnError)
	version := fs.String("version", "", "bundle version (semver, no v)")
	base := fs.String("base", "config/manifests/bases", "directory with the base CSV and icon")
	out := fs.String("out", "bundles/"+bundles.Package, "directory that gets <version>/")
	_ = fs.Parse(args)
	rendered, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	csv, err := os.ReadFile(filepath.Join(*base, bundles.Package+".clusterserviceversion.yaml"))
	if err != nil {
		return err
	}
	icon, err := os.ReadFile(filepath.Join(*base, "icon.svg"))
	if err != nil {
		return err
	}
	files, err := bundles.Generate(bundles.Input{Version: *version, Rendered: rendered, BaseCSV: csv, Icon: icon})
	if err != nil {
		return err
	}
	dir := filepath.Join(*out, *version)
	if err := os.RemoveAll(dir); err != nil { // no stale files survive
		return err
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeCatalog builds the catalog from every bundle under bundles/meshfed.
func writeCatalog(args []string) error {
	fs := flag.NewFlagSet("catalog", flag.ExitOnError)
	in := fs.String("bundles", "bundles/"+bundles.Package, "directory of bundle versions")
	out := fs.String("out", "bundles/catalog/"+bundles.Package+"/catalog.yaml", "catalog file to write")
	_ = fs.Parse(args)
	entries, err := os.ReadDir(*in)
	if err != nil {
		return err
	}
	var versions []string
	var gvks [][3]string
	var description string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		versions = append(versions, e.Name())
		raw, err := os.ReadFile(filepath.Join(*in, e.Name(), "manifests", bundles.Package+".clusterserviceversion.yaml"))
		if err != nil {
			return err
		}
		var csv operatorsv1alpha1.ClusterServiceVersion
		if err := yaml.Unmarshal(raw, &csv); err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		description = csv.Annotations["description"]
		gvks = gvks[:0]
		for _, o := range csv.Spec.CustomResourceDefinitions.Owned {
			_, group, _ := strings.Cut(o.Name, ".")
			gvks = append(gvks, [3]string{group, o.Version, o.Kind})
		}
	}
	slices.SortFunc(gvks, func(a, b [3]string) int { return slices.Compare(a[:], b[:]) })
	data, err := bundles.Catalog(versions, gvks, description)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*out, data, 0o644)
}
