// Package webhook holds the admission checks of Mesh and MeshFederation that the CRD's
// OpenAPI and CEL rules cannot express: checks across fields and lists, label selector
// syntax, and the Secrets a federation names. The checks are pure functions; the
// validators wrap them for controller-runtime's webhook server.
package webhook
