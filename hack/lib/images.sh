# shellcheck shell=bash
# Builds the images the kind cluster needs, offline: nothing here pulls from a
# registry. Sourced by hack/kind-up.

IMAGE_CACHE="$TETHER_CACHE/images"
PYTHON_BASE_TAG=python:3.11-slim-bookworm      # what the repo's Dockerfile starts FROM
PAUSE_TAG=registry.k8s.io/pause:3.10
COREDNS_TAG=registry.k8s.io/coredns/coredns:$COREDNS_VERSION
POSTGRES_TAG=${TETHER_POSTGRES_IMAGE:-tether-postgres:dev}
POSTGRES_MAJOR=15   # bookworm's postgresql-15
POSTGRES_ID=999     # uid and gid of postgres in the image, as in the official postgres image
POSTGRES_ROOTFS_TAG=tether-postgres-rootfs:bookworm-$POSTGRES_MAJOR
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# image_current TAG LABEL VALUE: TAG exists and carries the label LABEL=VALUE.
image_current() {
  [[ $(docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null) == "$3" ]]
}

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

# PostgreSQL 15 from bookworm for the chart's embedded history tier: a
# debootstrapped rootfs (cached as a tarball like the Python base), imported as
# $POSTGRES_ROOTFS_TAG, plus a thin layer with images/postgres-entrypoint.sh.
# The image is labelled with the script's hash, so editing the script rebuilds
# only that layer.
build_postgres_image() {
  local script="$HACK_DIR/images/postgres-entrypoint.sh" sum
  sum=$(sha256sum <"$script") && sum=${sum%% *}
  image_current "$POSTGRES_TAG" dev.tether.entrypoint "$sum" && return 0
  if ! image_present "$POSTGRES_ROOTFS_TAG"; then
    local tarball="$IMAGE_CACHE/postgres-$POSTGRES_MAJOR-bookworm.tar"
    if [[ ! -s $tarball ]]; then
      log "debootstrapping a bookworm rootfs with postgresql-$POSTGRES_MAJOR (~2 min)"
      local root; root=$(mktemp -d "$TETHER_CACHE/rootfs.XXXX")
      debootstrap --variant=minbase --include="postgresql-$POSTGRES_MAJOR" \
        bookworm "$root" "$DEBIAN_MIRROR" >"$TETHER_CACHE/logs/debootstrap-postgres.log" 2>&1 \
        || die "debootstrap failed: see $TETHER_CACHE/logs/debootstrap-postgres.log"
      _postgres_rootfs "$root"
      mkdir -p "$IMAGE_CACHE"
      tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf "$root"
    fi
    docker import "$tarball" "$POSTGRES_ROOTFS_TAG" >/dev/null
  fi
  log "building $POSTGRES_TAG"
  local ctx; ctx=$(mktemp -d)
  install -m 0755 "$script" "$ctx/tether-postgres"
  cat >"$ctx/Dockerfile" <<EOF
FROM $POSTGRES_ROOTFS_TAG
COPY tether-postgres /usr/local/bin/tether-postgres
ENV PATH=/usr/lib/postgresql/$POSTGRES_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 \\
    PGDATA=/var/lib/postgresql/data/pgdata
LABEL dev.tether.entrypoint=$sum
USER $POSTGRES_ID:$POSTGRES_ID
WORKDIR /var/lib/postgresql
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/tether-postgres"]
EOF
  DOCKER_BUILDKIT=0 docker build --tag "$POSTGRES_TAG" "$ctx" \
    >"$TETHER_CACHE/logs/postgres-image-build.log" 2>&1 \
    || die "building $POSTGRES_TAG failed: see $TETHER_CACHE/logs/postgres-image-build.log"
  rm -rf "$ctx"
}

# Turn the debootstrapped ROOT into the image's filesystem: without the cluster
# postgresql-common's postinst made (the entrypoint makes one in $PGDATA), with
# postgres at fixed ids, and with directories the postgres user owns.
_postgres_rootfs() {
  local root=$1 uid gid
  rm -rf "$root/etc/postgresql/$POSTGRES_MAJOR" "$root/var/lib/postgresql/$POSTGRES_MAJOR" \
    "$root"/var/log/postgresql/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # JIT (LLVM and its z3, ~150 MB) buys nothing for Tether's small queries: with no
  # llvmjit.so, postgres runs with JIT unavailable. Message catalogues and docs go too
  # (the server speaks C.UTF-8); copyright files stay.
  local lib="$root/usr/lib/postgresql/$POSTGRES_MAJOR/lib"
  rm -rf "$lib/bitcode" "$lib"/llvmjit* "$root"/usr/lib/*-linux-gnu/libLLVM-* \
    "$root"/usr/lib/*-linux-gnu/libz3.so* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  uid=$(awk -F: '$1 == "postgres" { print $3 }' "$root/etc/passwd")
  gid=$(awk -F: '$1 == "postgres" { print $3 }' "$root/etc/group")
  [[ -n $uid && -n $gid ]] || die "no postgres user in the rootfs"
  if [[ $uid != "$POSTGRES_ID" || $gid != "$POSTGRES_ID" ]]; then
    chroot "$root" groupmod -g "$POSTGRES_ID" postgres
    chroot "$root" usermod -u "$POSTGRES_ID" -g "$POSTGRES_ID" postgres
    find "$root" -xdev -uid "$uid" -exec chown -h "$POSTGRES_ID" {} +
    find "$root" -xdev -gid "$gid" -exec chgrp -h "$POSTGRES_ID" {} +
  fi
  install -d -o "$POSTGRES_ID" -g "$POSTGRES_ID" -m 0700 "$root/var/lib/postgresql/data"
  install -d -o "$POSTGRES_ID" -g "$POSTGRES_ID" -m 2775 "$root/run/postgresql"
  chmod 0755 "$root"
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
