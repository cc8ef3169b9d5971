#!/bin/sh
# Prepares the clusters for the scenarios: joins the two members to the hub with
# `meshfedctl join`, gives each member a Mesh if it has none, and creates the
# MeshFederation meshfed-system/kuttl (trust bootstrapped by meshfed) in the hub.
# Needs kubectl and meshfedctl in PATH; KUBECONFIG points at the hub.
set -eu
: "${KUBECONFIG:?point KUBECONFIG at the hub cluster}"
: "${MESHFED_KUBECONFIG_MEMBER1:?set MESHFED_KUBECONFIG_MEMBER1 to member 1's kubeconfig}"
: "${MESHFED_KUBECONFIG_MEMBER2:?set MESHFED_KUBECONFIG_MEMBER2 to member 2's kubeconfig}"
: "${MESHFED_MEMBER1_NAME:?set MESHFED_MEMBER1_NAME to member 1's cluster name}"
: "${MESHFED_MEMBER2_NAME:?set MESHFED_MEMBER2_NAME to member 2's cluster name}"

kubectl create namespace meshfed-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for i in 1 2; do
  eval kc=\$MESHFED_KUBECONFIG_MEMBER$i name=\$MESHFED_MEMBER${i}_NAME
  meshfedctl join --name "$name" --member-kubeconfig "$kc" --hub-kubeconfig "$KUBECONFIG" --hub-namespace meshfed-system
  if ! kubectl --kubeconfig "$kc" get mesh default >/dev/null 2>&1; then
    kubectl --kubeconfig "$kc" apply -f - <<YAML
apiVersion: meshfed.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  clusterName: $name
  network: net-$name
YAML
  fi
done
kubectl apply -f - <<YAML
apiVersion: meshfed.io/v1alpha1
kind: MeshFederation
metadata:
  name: kuttl
  namespace: meshfed-system
spec:
  trust:
    bootstrap: SelfSigned
  members:
  - name: $MESHFED_MEMBER1_NAME
    kubeconfigSecretRef: {name: $MESHFED_MEMBER1_NAME-kubeconfig}
  - name: $MESHFED_MEMBER2_NAME
    kubeconfigSecretRef: {name: $MESHFED_MEMBER2_NAME-kubeconfig}
YAML
kubectl wait --for=condition=Ready meshfederation/kuttl -n meshfed-system --timeout=120s
