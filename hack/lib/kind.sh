# shellcheck shell=bash
# kind, offline: the kind binary, a node image built here (no registry), and a
# dockerd of kind's own. Sourced by hack/kind-up; needs common.sh, binaries.sh
# and images.sh.

KIND_STATE=${TETHER_KIND_DIR:-/var/lib/tether-kind}
KIND_CACHE="$TETHER_CACHE/bin/kind-$KIND_VERSION"
ETCD_CACHE="$TETHER_CACHE/bin/etcd-$ETCD_VERSION"
CRICTL_CACHE="$TETHER_CACHE/bin/crictl-$CRICTL_VERSION"
KIND_NODE_TAG=tether-kind-node:$KUBE_VERSION
KIND_BASE_TAG=tether-kind-base:$KUBE_VERSION
KIND_NETWORK_SUBNET=${TETHER_KIND_SUBNET:-172.29.0.0/24}
ETCD_TAG=registry.k8s.io/etcd:${ETCD_VERSION#v}-0   # the tag kubeadm $KUBE_VERSION asks for
KUBE_PROXY_TAG=registry.k8s.io/kube-proxy:$KUBE_VERSION
KUBE_PROXY_BASE_TAG=tether-kube-proxy-base:bookworm # kube-proxy's iptables and conntrack

# The dockerd that runs kind's nodes (and builds the images): its own socket,
# data and exec roots, so it shares nothing with another dockerd on the machine.
# It leaves the host's iptables alone: node-to-node and host-to-node traffic stays
# on the kind bridge, and published ports go through docker-proxy. Its default
# runtime is hack/kind/runc-wrapper, which lets `--privileged` start here.
KIND_DOCKER_HOST=unix://$KIND_STATE/docker.sock

kind_docker_ready() { DOCKER_HOST=$KIND_DOCKER_HOST docker info >/dev/null 2>&1; }

ensure_kind_docker() {
  kind_docker_ready && return 0
  command -v dockerd >/dev/null || die "dockerd not found: run hack/install-deps (Debian's docker.io)"
  log "starting kind's dockerd ($KIND_DOCKER_HOST)"
  mkdir -p "$KIND_STATE/logs" "$KIND_STATE/exec"
  setsid dockerd --host "$KIND_DOCKER_HOST" --data-root "$KIND_STATE/docker" \
    --exec-root "$KIND_STATE/exec" --pidfile "$KIND_STATE/dockerd.pid" \
    --iptables=false --ip-masq=false --bridge=none \
    --add-runtime "tether-kind=$HACK_DIR/kind/runc-wrapper" --default-runtime tether-kind \
    >"$KIND_STATE/logs/dockerd.log" 2>&1 </dev/null &
  wait_for "kind's dockerd (log: $KIND_STATE/logs/dockerd.log)" 60 kind_docker_ready
}

stop_kind_docker() {
  local pid
  pid=$(cat "$KIND_STATE/dockerd.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  wait_for "kind's dockerd to stop" 60 bash -c "! kill -0 $pid"
}

# kind's network, made before kind would make it: a /24 the nodes' pod routes
# derive from (hack/kind/node/rootfs/kind/bin/tether-cni).
ensure_kind_network() {
  docker network inspect kind >/dev/null 2>&1 && return 0
  local net=${KIND_NETWORK_SUBNET%/*}
  docker network create --driver bridge --subnet "$KIND_NETWORK_SUBNET" --gateway "${net%.*}.1" \
    --opt com.docker.network.bridge.name=tkind0 \
    --opt com.docker.network.bridge.enable_ip_masquerade=false kind >/dev/null
}

build_kind() {
  [[ -x $KIND_CACHE/kind ]] && return 0
  log "building kind $KIND_VERSION from the Go module proxy"
  mkdir -p "$KIND_CACHE.tmp"
  GOBIN="$KIND_CACHE.tmp" CGO_ENABLED=0 go install $GO_BUILD_FLAGS "sigs.k8s.io/kind@$KIND_VERSION"
  rm -rf "$KIND_CACHE" && mv "$KIND_CACHE.tmp" "$KIND_CACHE"
}

build_etcd() {
  go_build_pinned etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_CACHE"
}

build_crictl() {
  go_build_pinned crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
    "$CRICTL_CACHE"
}

# The directory kind's base files come from: images/base/files of the kind module.
_kind_module_dir() {
  GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# What the node image is made of; a change to any of it rebuilds the image.
# offline_node_image (hack/kind-up) hashes it once, as KIND_NODE_INPUTS.
_kind_node_inputs() {
  {
    echo "$KIND_VERSION $KUBE_VERSION $ETCD_VERSION $CRICTL_VERSION $COREDNS_VERSION ${COREDNS_PLUGINS[*]}"
    find "$HACK_DIR/kind/node" "$HACK_DIR/lib/kind.sh" "$HACK_DIR/images/pause.c" -type f -print0 | sort -z \
      | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

# A docker image of one static binary, on PATH.
_binary_image() {
  _import_binary_image "$1" "$2" --change 'ENV PATH=/' --change "ENTRYPOINT [\"/$(basename "$1")\"]"
}

# The parts of the node image that need no Go build (kind's files on bookworm with
# Debian's packages, and kube-proxy's bookworm with iptables): built while the
# binaries compile. Both carry the inputs' hash; a current node image needs neither.
build_kind_base_images() {
  local inputs=${KIND_NODE_INPUTS:-$(_kind_node_inputs)}
  image_current "$KIND_NODE_TAG" dev.tether.inputs "$inputs" && return 0
  image_current "$KIND_BASE_TAG" dev.tether.inputs "$inputs" && return 0
  log "building the kind node's base image $KIND_BASE_TAG"
  build_python_base
  local ctx; ctx=$(mktemp -d)
  cp -r "$HACK_DIR/kind/node/." "$ctx/"
  cp -r "$(_kind_module_dir)/images/base/files" "$ctx/files"
  chmod -R u+w "$ctx/files"
  docker build --network host --quiet --label "dev.tether.inputs=$inputs" --tag "$KIND_BASE_TAG" \
    "$ctx" >"$KIND_STATE/logs/node-build.log" 2>&1 \
    || die "node base image build failed: see $KIND_STATE/logs/node-build.log"
  cat >"$ctx/Dockerfile.proxy" <<DOCKERFILE
FROM $PYTHON_BASE_TAG
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends iptables conntrack && rm -rf /var/lib/apt/lists/*
DOCKERFILE
  docker build --network host --quiet --label "dev.tether.inputs=$inputs" --tag "$KUBE_PROXY_BASE_TAG" \
    -f "$ctx/Dockerfile.proxy" "$ctx" >>"$KIND_STATE/logs/node-build.log" 2>&1 \
    || die "kube-proxy base image build failed: see $KIND_STATE/logs/node-build.log"
  rm -rf "$ctx"
}

build_kind_node_image() {
  local inputs=${KIND_NODE_INPUTS:-$(_kind_node_inputs)}
  image_current "$KIND_NODE_TAG" dev.tether.inputs "$inputs" && return 0
  build_kind_base_images
  log "building the kind node image $KIND_NODE_TAG"
  local b images=()
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    _binary_image "$BIN_CACHE/$b" "registry.k8s.io/$b:$KUBE_VERSION"
    images+=("registry.k8s.io/$b:$KUBE_VERSION")
  done
  _binary_image "$ETCD_CACHE/etcd" "$ETCD_TAG"
  local ctx; ctx=$(mktemp -d)
  cp "$BIN_CACHE/kube-proxy" "$ctx/"
  printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$KUBE_PROXY_BASE_TAG" >"$ctx/Dockerfile"
  docker build --quiet --tag "$KUBE_PROXY_TAG" "$ctx" >/dev/null || die "kube-proxy image build failed"
  rm -rf "$ctx"
  build_pause
  build_coredns_image
  images+=("$ETCD_TAG" "$KUBE_PROXY_TAG" "$PAUSE_TAG" "$COREDNS_TAG")

  # As `kind build node-image` does: start containerd in a container of the base
  # image, copy the binaries in, import the images, commit. (Debian's containerd
  # 1.6 cannot pin them; kind's kubelet config never collects images anyway:
  # imageGCHighThresholdPercent 100.)
  local c=tether-kind-node-build
  docker rm -f "$c" >/dev/null 2>&1 || true
  docker run -d --name "$c" --privileged --entrypoint sleep "$KIND_BASE_TAG" infinity >/dev/null
  for b in "$BIN_CACHE/kubeadm" "$BIN_CACHE/kubelet" "$TOOLS_CACHE/kubectl" "$CRICTL_CACHE/crictl"; do
    docker cp "$b" "$c:/usr/bin/"
  done
  docker exec -d "$c" containerd
  wait_for "containerd in the node image build" 60 docker exec "$c" ctr version
  docker save "${images[@]}" | docker exec -i "$c" ctr -n k8s.io images import --no-unpack \
    --all-platforms - >/dev/null \
    || die "importing the control-plane images into the node image failed"
  docker exec "$c" sh -c "echo $KUBE_VERSION >/kind/version && pkill containerd"
  wait_for "containerd to stop in the node image build" 30 bash -c "! docker exec $c pgrep containerd"
  docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
    --change "LABEL dev.tether.inputs=$inputs" "$c" "$KIND_NODE_TAG" >/dev/null
  docker rm -f "$c" >/dev/null
}
