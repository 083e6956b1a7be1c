#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL cluster (Debian's binaries) in a directory.
#
#   scripts/services/postgres.sh start DIR [PORT]   # prints the database URL on stdout
#   scripts/services/postgres.sh stop DIR
#
# start on a DIR whose cluster was stopped starts it again, with its data, on
# its old port (for tests that take the database down and bring it back).
#
# The cluster trusts local connections (user postgres, database "metrics"), listens
# on 127.0.0.1 only, and keeps everything (data, socket, log) under DIR. PostgreSQL
# refuses to run as root, so as root the server runs as the "postgres" user.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start DIR [PORT] | stop DIR" >&2
  exit 2
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "postgres.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
  if [ -f "$dir/data/PG_VERSION" ]; then
    dir=$(cd "$dir" && pwd)
    port=${3:-$(cat "$dir/port")}
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || {
      cat "$dir/postgres.log" >&2
      exit 1
    }
    echo "postgres://postgres@127.0.0.1:$port/metrics"
    exit 0
  fi
  port=${3:-$(free_port)}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    # The postgres user must be able to reach DIR (e.g. under a 0700 /tmp/xyz).
    chmod 0755 "$dir"
    if ! runuser -u postgres -- test -x "$dir"; then
      echo "postgres.sh: the postgres user cannot reach $dir; make its parent directories o+x" >&2
      exit 1
    fi
  fi
  as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || {
    cat "$dir/postgres.log" >&2
    exit 1
  }
  as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres metrics
  echo "$port" >"$dir/port"
  echo "postgres://postgres@127.0.0.1:$port/metrics"
  ;;
stop)
  dir=$(cd "$dir" && pwd)
  if [ -d "$dir/data" ]; then
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  ;;
*)
  echo "usage: $0 start DIR [PORT] | stop DIR" >&2
  exit 2
  ;;
esac
