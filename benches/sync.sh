#!/usr/bin/env bash
# `siyu followers sync` of N followers from the fake WeChat API (a separate process, so its
# memory is not counted): wall time and siyu's peak memory (max RSS), for each N given, on
# sled and (with PG=1) on PostgreSQL. Unpaced (rate_per_sec = 0) to measure siyu itself;
# at WeChat's real pace the calls decide (100,000 followers = 1,010 calls, 20 s at 50/s).
# From the project's root, after `cargo build --release`:
#   SIZES="10000 100000" PG=1 bash benches/sync.sh
set -euo pipefail
SIZES=${SIZES:-"10000 100000"}
SIYU=${SIYU:-target/release/siyu}
PORT=${PORT:-9137}
WORK=$(mktemp -d /tmp/siyu-sync.XXXX)
trap 'kill $FAKE 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$SIYU" fake-wechat --bind 127.0.0.1:$PORT >"$WORK/fake.log" 2>&1 &
FAKE=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/fake/calls" && break; sleep 0.1; done

config() { # $1: storage table
  cat <<TOML
[server]
bind = "127.0.0.1:0"
$1
[[account]]
id = "demo"
kind = "official"
app_id = "wx0123456789abcdef"
token = "siyutoken"
mode = "plaintext"
[account.api]
secret = "bench"
api_base = "http://127.0.0.1:$PORT"
rate_per_sec = 0
TOML
}

backends="sled"
[ "${PG:-0}" = 1 ] && backends="sled postgres"
for n in $SIZES; do
  curl -s -X POST -H 'content-type: application/json' \
    -d "{\"count\": $n, \"seed\": 1, \"tags\": {\"老客\": 10}}" \
    "http://127.0.0.1:$PORT/fake/followers" >/dev/null
  for backend in $backends; do
    dir="$WORK/$backend-$n"; mkdir -p "$dir"
    if [ "$backend" = postgres ]; then
      dropdb -h 127.0.0.1 -U root --if-exists siyu_syncbench >/dev/null
      createdb -h 127.0.0.1 -U root siyu_syncbench
      config "[storage]
backend = \"postgres\"
url = \"postgres://root@127.0.0.1:5432/siyu_syncbench\"" >"$dir/config.toml"
      "$SIYU" migrate --config "$dir/config.toml" >/dev/null
    else
      config "[storage]
path = \"data/siyu.sled\"" >"$dir/config.toml"
    fi
    for pass in first second; do
      /usr/bin/time -f "%e %M" -o "$dir/time" \
        "$SIYU" followers sync --account demo --config "$dir/config.toml" >"$dir/out" 2>"$dir/err"
      read -r secs kib <"$dir/time"
      echo "$backend n=$n $pass run: ${secs}s, max RSS $((kib / 1024)) MiB — $(head -1 "$dir/out")"
    done
  done
done
