// Package bundles generates meshfed's OLM bundle and file-based catalog from config/
// (see `make bundle` and `make catalog`); the generated trees live beside this file:
// meshfed/<version>/ is one bundle, catalog/ the catalog. Never edit them by hand.
package bundles
