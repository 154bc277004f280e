#!/usr/bin/env bash
# siyu's webhook on PostgreSQL beside pgbench's simple-update transaction (-N), in one run,
# same machine, same number of clients. From the project's root, after a release build:
#   CLIENTS=16 DURATION=15 bash benches/postgres.sh
# Needs PostgreSQL at 127.0.0.1:5432 (trust), pgbench, wrk and python3 with `cryptography`
# (the shared bench's request generator). Prints one line per side: throughput and p99.
set -euo pipefail
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-15}
N=${N:-300000}
SIYU=${SIYU:-target/release/siyu}
BENCH=${BENCH:-../shared/bench}
PG="-h 127.0.0.1 -p 5432 -U root"
WORK=$(mktemp -d /tmp/siyu-pgbench.XXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# --- pgbench -N: BEGIN; UPDATE accounts; SELECT; INSERT history; END ---
dropdb $PG --if-exists siyu_pgbench >/dev/null
createdb $PG siyu_pgbench
pgbench $PG -i -q -s 10 siyu_pgbench >/dev/null 2>&1
(cd "$WORK" && pgbench $PG -N -c "$CLIENTS" -j 2 -T "$DURATION" -l siyu_pgbench > pgbench.txt 2>&1)
tps=$(grep -oP 'tps = \K[0-9.]+' "$WORK/pgbench.txt" | head -1)
# Per-transaction log: column 3 is the latency in microseconds.
p99=$(cat "$WORK"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)]/1000}')
echo "pgbench -N  clients=$CLIENTS  tps=$tps  p99=${p99}ms"

# --- siyu serve on PostgreSQL, safe mode, 1,000 keyword rules, a new follower per request ---
dropdb $PG --if-exists siyu_webhook >/dev/null
createdb $PG siyu_webhook
mkdir -p "$WORK/replies"
python3 - "$WORK/replies/bench.toml" <<'PY'
import sys
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i in range(1000):
        f.write('[[rule]]\nname = "kw%d"\nkeywords = ["kw%d"]\nreply = "reply %d"\n\n' % (i, i, i))
    f.write('[[rule]]\nname = "fallback"\ndefault = true\nreply = "default"\n')
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/config.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
max_clock_skew_secs = 300

[storage]
backend = "postgres"
url_env = "SIYU_DATABASE_URL"
pool_size = $CLIENTS

[[account]]
id = "bench"
kind = "official"
app_id = "wx0123456789abcdef"
token = "siyutoken"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
mode = "safe"
TOML
SIYU_DATABASE_URL="postgres://root@127.0.0.1:5432/siyu_webhook" RUST_LOG=warn \
  "$SIYU" serve --config "$WORK/config.toml" > "$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
python3 "$BENCH/gen_requests.py" -n "$N" -o "$WORK/req.tsv" --path /wx/bench >/dev/null
wrk -t2 -c"$CLIENTS" -d3s -s "$BENCH/wx.lua" "http://127.0.0.1:$port" -- "$WORK/req.tsv" >/dev/null
wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$BENCH/wx.lua" "http://127.0.0.1:$port" -- "$WORK/req.tsv" > "$WORK/wrk.txt"
rps=$(grep -oP 'Requests/sec:\s+\K[0-9.]+' "$WORK/wrk.txt")
p99=$(grep -oP '^\s+99%\s+\K\S+' "$WORK/wrk.txt")
non2xx=$(grep -oP 'Non-2xx or 3xx responses: \K[0-9]+' "$WORK/wrk.txt" || echo 0)
echo "siyu safe-mode callbacks on PostgreSQL  clients=$CLIENTS  req/s=$rps  p99=$p99  non-2xx=$non2xx"
python3 -c "print('ratio siyu/pgbench = %.2f' % ($rps / $tps))"
