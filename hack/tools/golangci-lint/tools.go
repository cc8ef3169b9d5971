//go:build tools

// Package tools pins the commands this wrapper module builds.
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
