#!/bin/bash
# Entrypoint of tether-postgres:dev (installed as /usr/local/bin/tether-postgres):
# a single PostgreSQL 15 server for Tether's Postgres history tier.
#
#   POSTGRES_PASSWORD       password of POSTGRES_USER (required on first start, never printed)
#   POSTGRES_PASSWORD_FILE  or a file holding it (e.g. a mounted Secret key)
#   POSTGRES_USER           superuser made by initdb (default tether)
#   POSTGRES_DB             database made on first start (default tether)
#   PGDATA                  data directory (default /var/lib/postgresql/data/pgdata: a
#                           subdirectory of the volume, so lost+found does not bother initdb)
#
# On first start (no $PGDATA/PG_VERSION) it runs initdb in $PGDATA.init, creates the
# database, and only then renames the directory to $PGDATA, so a start killed halfway is
# redone from scratch instead of leaving a cluster without its database. Host connections
# from any address need the password (SCRAM); the local socket trusts, as it is reachable
# only from inside the container. Arguments are passed on to postgres (e.g. -c key=value).
# Runs as the image's postgres user (uid/gid 999); started as root, it steps down to it.
set -euo pipefail

export PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
user=${POSTGRES_USER:-tether}
db=${POSTGRES_DB:-tether}

log() { printf 'tether-postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA"
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres {} +
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

id -un >/dev/null 2>&1 \
  || die "uid $(id -u) has no passwd entry, which initdb and postgres need: run as postgres ($(id -u postgres):$(id -g postgres))"

# The server's socket: Debian's default directory (where psql looks) when writable.
sockdir=/var/run/postgresql
[[ -w $sockdir ]] || sockdir=/tmp

init_cluster() {
  local parent=${PGDATA%/*} target
  if [[ -d $PGDATA && -n $(ls -A "$PGDATA") ]]; then
    die "$PGDATA holds files but no PG_VERSION: not a data directory, refusing to touch it"
  fi
  if [[ -w $parent ]]; then
    target=$PGDATA.init
    rm -rf "$target"
  elif [[ -d $PGDATA && -w $PGDATA ]]; then
    target=$PGDATA # PGDATA is itself the mount point: initialise in place
  else
    die "cannot create $PGDATA: $parent must be writable by uid $(id -u) or gid $(id -g) (a volume mounted with fsGroup $(id -g))"
  fi

  local pwfile tmp=
  if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
    pwfile=$POSTGRES_PASSWORD_FILE
  elif [[ -n ${POSTGRES_PASSWORD:-} ]]; then
    tmp=$(mktemp) # 0600; printf is a builtin, so the password shows in no argv
    printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp"
    pwfile=$tmp
  else
    die "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is not set: refusing to create a server without a password"
  fi

  log "initialising $PGDATA (user $user, database $db)"
  local rc=0
  initdb -D "$target" -U "$user" --pwfile="$pwfile" --auth-host=scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C.UTF-8 --no-instructions >&2 || rc=$?
  [[ -z $tmp ]] || rm -f "$tmp"
  ((rc == 0)) || die "initdb failed (exit $rc)"

  cat >>"$target/pg_hba.conf" <<'EOF'

# tether-postgres: password (SCRAM) connections from any address; who may reach the
# server at all is decided by the Service and NetworkPolicy in front of it.
host    all             all             0.0.0.0/0               scram-sha-256
host    all             all             ::/0                    scram-sha-256
EOF

  if [[ $db != postgres ]]; then
    pg_ctl -D "$target" -w -o "-c listen_addresses='' -c unix_socket_directories=$sockdir" start >&2
    createdb -h "$sockdir" -U "$user" "$db"
    pg_ctl -D "$target" -w -m fast stop >&2
  fi

  if [[ $target != "$PGDATA" ]]; then
    [[ ! -d $PGDATA ]] || rmdir "$PGDATA"
    mv "$target" "$PGDATA"
  fi
  log "initialised $PGDATA"
}

[[ -s $PGDATA/PG_VERSION ]] || init_cluster

# fsGroup makes the kubelet add group permissions to the volume on every mount, and
# postgres starts only on a data directory that is 0700 (or 0750) and its own.
chmod 0700 "$PGDATA" 2>/dev/null \
  || die "$PGDATA belongs to uid $(stat -c %u "$PGDATA"), not $(id -u): postgres runs only on a data directory it owns"

unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$sockdir" "$@"
