# shellcheck shell=bash
# Builds the cluster's images offline and loads them into each node's
# containerd. Sourced by hack/cluster. Nothing here pulls from a registry.

IMAGE_CACHE="$TETHER_CACHE/images"
PYTHON_BASE_TAG=python:3.11-slim-bookworm      # what the repo's Dockerfile starts FROM
PAUSE_TAG=registry.k8s.io/pause:3.10
COREDNS_TAG=registry.k8s.io/coredns/coredns:$COREDNS_VERSION
PROJECT_TAG=${TETHER_IMAGE:-tether:dev}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

docker_ready() { docker info >/dev/null 2>&1; }

# Start dockerd if none answers. It runs without a bridge or iptables rules of
# its own: builds need no network (wheels are copied in), and the cluster's
# iptables belong to kube-proxy.
ensure_docker() {
  docker_ready && return 0
  command -v dockerd >/dev/null || die "dockerd not found: install Debian's docker.io (hack/cluster deps)"
  log "starting dockerd"
  mkdir -p "$STATE_DIR/run" "$STATE_DIR/logs"
  # dockerd writes its own pid file where `stop` looks, so `down` stops only a
  # dockerd that hack/cluster started.
  setsid dockerd --iptables=false --ip-masq=false --bridge=none \
    --pidfile "$(pid_file dockerd)" >"$(log_file dockerd)" 2>&1 </dev/null &
  wait_for "dockerd (log: $(log_file dockerd))" 60 docker_ready
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# A Debian bookworm rootfs with Python 3.11, tagged like the official slim
# image so the repo's Dockerfile builds unchanged here and on kind.
build_python_base() {
  image_present "$PYTHON_BASE_TAG" && return 0
  local tarball="$IMAGE_CACHE/python-base-bookworm.tar"
  if [[ ! -s $tarball ]]; then
    log "debootstrapping a bookworm rootfs with python3 (~1 min)"
    local root; root=$(mktemp -d "$TETHER_CACHE/rootfs.XXXX")
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$root" "$DEBIAN_MIRROR" >"$TETHER_CACHE/logs/debootstrap.log" 2>&1 \
      || die "debootstrap failed: see $TETHER_CACHE/logs/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    mkdir -p "$IMAGE_CACHE"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  docker import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    "$tarball" "$PYTHON_BASE_TAG" >/dev/null
}

# A single static binary as the whole image.
_import_binary_image() {
  local binary=$1 tag=$2; shift 2
  local dir; dir=$(mktemp -d)
  cp "$binary" "$dir/"
  tar -C "$dir" -c . | docker import "$@" - "$tag" >/dev/null
  rm -rf "$dir"
}

build_pause() {
  image_present "$PAUSE_TAG" && return 0
  local out="$IMAGE_CACHE/pause"
  mkdir -p "$IMAGE_CACHE"
  gcc -static -Os -o "$out" "$HACK_DIR/images/pause.c" && strip "$out"
  _import_binary_image "$out" "$PAUSE_TAG" --change 'ENTRYPOINT ["/pause"]'
}

build_coredns_image() {
  image_present "$COREDNS_TAG" && return 0
  _import_binary_image "$DNS_CACHE/coredns" "$COREDNS_TAG" --change 'ENTRYPOINT ["/coredns"]'
}

build_project_image() {
  log "building $PROJECT_TAG from $REPO_ROOT/Dockerfile"
  "$HACK_DIR/build-image" "$PROJECT_TAG" >"$STATE_DIR/image-build.log" 2>&1 \
    || die "image build failed: see $STATE_DIR/image-build.log"
}

# _image_archive TAG ID: a `docker save` of TAG at image ID, made once and
# shared by every node that loads it.
_image_archive() {
  local archive="$STATE_DIR/images/${1//[\/:]/_}-${2#sha256:}.tar"
  if [[ ! -s $archive ]]; then
    mkdir -p "$STATE_DIR/images"
    rm -f "$STATE_DIR/images/${1//[\/:]/_}-"*.tar
    docker save -o "$archive.tmp" "$1" && mv "$archive.tmp" "$archive"
  fi
  echo "$archive"
}

# Copy images into one node's containerd (the local-cluster `kind load`).
# An image whose id the node already holds is skipped.
load_images() {
  local node=$1; shift
  local sock; sock=$(containerd_socket "$node")
  local marks; marks="$(node_dir "$node")/images"
  mkdir -p "$marks"
  local tag id mark
  for tag in "$@"; do
    id=$(docker image inspect --format '{{.Id}}' "$tag")
    mark="$marks/${tag//[\/:]/_}"
    [[ -f $mark && $(<"$mark") == "$id" ]] && continue
    ctr -a "$sock" -n k8s.io images import "$(_image_archive "$tag" "$id")" >/dev/null \
      || die "loading $tag into $node failed"
    echo "$id" >"$mark"
  done
}
