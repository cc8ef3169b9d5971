// Package webhook serves the admission validators of Mesh and MeshFederation. The checks
// that the CRDs' OpenAPI and CEL rules cannot express (across fields and lists, label
// selector syntax) are pure functions beside the API types (meshv1.CheckMesh,
// meshv1.CheckFederation), so the controllers apply the same ones when the webhook is not
// installed; this package wraps them for controller-runtime's webhook server and adds what
// needs the API server (the Secrets a federation names).
package webhook
