#!/bin/sh
# Runs the kuttl scenarios against the clusters `testbed run` started (make kuttl):
# cluster 1 is the hub, clusters 2 and 3 the members.
#
# kuttl writes the kubeconfig it uses (an admin's) into its working directory. It runs in
# a copy of kuttl-tests/ in a temporary directory, removed on exit, so that no credential
# is ever written into the repository.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
export MESHFED_KUBECONFIG_MEMBER1="$MESHFED_KUBECONFIG_2" MESHFED_MEMBER1_NAME="$MESHFED_CLUSTER_2"
export MESHFED_KUBECONFIG_MEMBER2="$MESHFED_KUBECONFIG_3" MESHFED_MEMBER2_NAME="$MESHFED_CLUSTER_3"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$root/kuttl-tests/." "$work"
cd "$work"
kubectl-kuttl test --template-var "member1=$MESHFED_MEMBER1_NAME" --template-var "member2=$MESHFED_MEMBER2_NAME" "$@"
