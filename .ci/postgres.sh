#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the test suite, as an unprivileged user, on a
# loopback port, with its data in a temporary directory. Prints the URL to use as
# STET_TEST_POSTGRES_URL. Usage: .ci/postgres.sh start [PORT] | .ci/postgres.sh stop DIR
set -euo pipefail

find_bin() {
    local name=$1 found
    found=$(command -v "$name" 2>/dev/null || true)
    if [ -z "$found" ]; then
        found=$(ls /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    echo "$found"
}

install_server() {
    if [ -n "$(find_bin initdb)" ]; then
        return
    fi
    echo "PostgreSQL server not found; installing the Debian package" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to apt-get install postgresql" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

as_user() {
    # initdb refuses to run as root: run the server as an unprivileged account.
    if [ "$(id -u)" -eq 0 ]; then
        id stetpg >/dev/null 2>&1 || useradd --system --no-create-home stetpg
        su stetpg -s /bin/sh -c "$*"
    else
        sh -c "$*"
    fi
}

case "${1:-}" in
start)
    port=${2:-54329}
    install_server
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    dir=$(mktemp -d /tmp/stet-pg.XXXXXX)
    # Noted first, so that a start that fails halfway can still be stopped and removed.
    echo "$dir" >"$dir/../stet-pg-dir.$port"
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        id stetpg >/dev/null 2>&1 || useradd --system --no-create-home stetpg
        chown stetpg "$dir"
    fi
    as_user "'$initdb' -D '$dir/data' -A trust -U postgres --no-sync >'$dir/initdb.log' 2>&1"
    as_user "'$pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 -o \"-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start >/dev/null"
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=$2
    pg_ctl=$(find_bin pg_ctl)
    as_user "'$pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1" || true
    rm -rf "$dir"
    for note in "$(dirname "$dir")"/stet-pg-dir.*; do  # and the note start left next to it
        if [ "$(cat "$note" 2>/dev/null)" = "$dir" ]; then rm -f "$note"; fi
    done
    ;;
*)
    echo "usage: $0 start [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
