#!/usr/bin/env bash
# make demo: the whole pipeline on this machine. Starts a private RabbitMQ
# and Redis, the fake Comet (unless COMET_DEMO_SERVER_URL names a real
# server), two comet-worker processes; provisions a realistic batch (creates
# for two products, then suspends, unsuspends, package and password changes,
# terminations), shows progress, prints a summary table and the Comet
# account count, then stops what it started.
#
#   DEMO_CREATES=200        creates (split over two products)
#   DEMO_WORKERS=2          worker processes
#   DEMO_CONCURRENCY=32     jobs in flight per worker
#   DEMO_LATENCY_MS=10      fake Comet latency per call
#   DEMO_KEEP=1             leave the stack running (prints how to use and stop it)
#   COMET_DEMO_SERVER_URL / COMET_DEMO_SERVER_USERNAME / COMET_DEMO_SERVER_PASSWORD_FILE
#                           use a real Comet Server instead of the fake
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CREATES=${DEMO_CREATES:-200}
WORKERS=${DEMO_WORKERS:-2}
CONC=${DEMO_CONCURRENCY:-32}
LAT=${DEMO_LATENCY_MS:-10}
DIR=$(mktemp -d /tmp/comet-demo.XXXXXX)
PIDS=()

stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/services.sh stop "$DIR/svc" >/dev/null 2>&1 || true
}
if [ "${DEMO_KEEP:-0}" != 1 ]; then trap stop_all EXIT; fi
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
step() { printf '\n== %s\n' "$*"; }

step "starting RabbitMQ and Redis (private, in $DIR)"
scripts/services.sh start "$DIR/svc" rabbitmq redis
# shellcheck disable=SC1091
. "$DIR/svc/env"

umask 077
head -c 32 /dev/urandom | base64 >"$DIR/demo.key"
if [ -n "${COMET_DEMO_SERVER_URL:-}" ]; then
  SERVER_URL=$COMET_DEMO_SERVER_URL
  SERVER_USER=${COMET_DEMO_SERVER_USERNAME:-admin}
  PWFILE=${COMET_DEMO_SERVER_PASSWORD_FILE:?set COMET_DEMO_SERVER_PASSWORD_FILE for a real server}
  step "using the Comet Server at $SERVER_URL"
else
  PORT=$(free_port)
  SERVER_URL="http://127.0.0.1:$PORT"
  SERVER_USER=admin
  PWFILE="$DIR/comet-admin.pw"
  echo "admin-secret" >"$PWFILE"
  step "starting the fake Comet Server on $SERVER_URL (${LAT} ms per call)"
  bin/fake-comet --port "$PORT" --threads 8 --latency-ms "$LAT" 2>"$DIR/fake-comet.log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "$SERVER_URL/__fake/health" >/dev/null && break; sleep 0.1; done
fi

cat >"$DIR/comet.conf" <<CONF
log = { level = "info"; format = "json"; };
worker = { concurrency = $CONC; grace_seconds = 20; };
amqp = { prefetch = $CONC; };
redis = { prefix = "demo:"; };
keys = ( { id = "demo"; file = "$DIR/demo.key"; } );
servers = ( { url = "$SERVER_URL"; username = "$SERVER_USER"; password_file = "$PWFILE"; } );
CONF

step "starting $WORKERS comet-worker processes ($CONC jobs in flight each)"
for i in $(seq "$WORKERS"); do
  bin/comet-worker -c "$DIR/comet.conf" 2>"$DIR/worker-$i.log" &
  PIDS+=($!)
done
sleep 1

# Two products, as a provider would sell them.
basic='"product":{"policy_group":"WHMCS_demo_basic","storage_provider":"1003-default","require_password_change":false},"quotas":{"number_of_devices":3,"protected_item_quota_gb":null,"protected_item_quota_tb":null,"storage_vault_quota_gb":100,"storage_vault_quota_tb":null}'
pro='"product":{"policy_group":"WHMCS_demo_pro","storage_provider":"1003-eu","require_password_change":true},"quotas":{"number_of_devices":10,"protected_item_quota_gb":500,"protected_item_quota_tb":null,"storage_vault_quota_gb":null,"storage_vault_quota_tb":1}'
upgrade='"product":{"policy_group":"WHMCS_demo_pro","storage_provider":"1003-eu","require_password_change":true},"quotas":{"number_of_devices":25,"protected_item_quota_gb":null,"protected_item_quota_tb":2,"storage_vault_quota_gb":null,"storage_vault_quota_tb":5}'
acct() { printf '"service_id":%d,"server":{"url":"%s"},"account":{"username":"customer%d@example.com","custom_username":false},"client":{"email":"customer%d@example.com","firstname":"Customer"}' "$1" "$SERVER_URL" "$1" "$1"; }

: >"$DIR/phase1.jsonl"
for i in $(seq "$CREATES"); do
  sid=$((10000 + i))
  prod=$basic; [ $((i % 2)) -eq 0 ] && prod=$pro
  printf '{"action":"create",%s,%s,"password":"Demo-Passw0rd-%d"}\n' "$(acct $sid)" "$prod" "$i" >>"$DIR/phase1.jsonl"
done
# Later jobs touch distinct slices of the services; the ones that must
# follow another (unsuspend after suspend) go in a later phase.
n5=$((CREATES / 5)); n10=$((CREATES / 10))
: >"$DIR/phase2.jsonl"
for i in $(seq 1 "$n5"); do printf '{"action":"suspend",%s}\n' "$(acct $((10000 + i)))"; done >>"$DIR/phase2.jsonl"
for i in $(seq $((n5 + 1)) $((n5 + n5 * 3 / 4))); do printf '{"action":"change_package",%s,%s}\n' "$(acct $((10000 + i)))" "$upgrade"; done >>"$DIR/phase2.jsonl"
for i in $(seq $((2 * n5 + 1)) $((2 * n5 + n5 * 3 / 4))); do printf '{"action":"change_password",%s,"password":"New-Passw0rd-%d"}\n' "$(acct $((10000 + i)))" "$i"; done >>"$DIR/phase2.jsonl"
: >"$DIR/phase3.jsonl"
for i in $(seq 1 "$n10"); do printf '{"action":"unsuspend",%s}\n' "$(acct $((10000 + i)))"; done >>"$DIR/phase3.jsonl"
for i in $(seq $((3 * n5 + 1)) $((3 * n5 + n10))); do printf '{"action":"terminate",%s}\n' "$(acct $((10000 + i)))"; done >>"$DIR/phase3.jsonl"

export COMET_AMQP_URL
start=$(date +%s.%N)
rc=0
for ph in 1 2 3; do
  step "phase $ph: $(wc -l <"$DIR/phase$ph.jsonl") jobs ($(grep -o '"action":"[a-z_]*"' "$DIR/phase$ph.jsonl" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, substr($2,11,length($2)-11); sep=", "}'))"
  bin/comet-enqueue -c "$DIR/comet.conf" --batch "$DIR/phase$ph.jsonl" --wait --timeout 600 \
    --latencies "$DIR/lat$ph.txt" >"$DIR/phase$ph.out" || rc=1
done
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

step "summary (latency = publish to result event)"
cat "$DIR"/lat*.txt | awk '
  { n[$2]++; if ($3 == "succeeded") ok[$2]++; else bad[$2]++; lat[$2, n[$2]] = $4; all[++t] = $4 }
  function pct(arr, key, cnt, p,   i, j, v, tmp) {
    for (i = 1; i <= cnt; i++) tmp[i] = (key == "") ? arr[i] : arr[key, i]
    for (i = 2; i <= cnt; i++) { v = tmp[i]; for (j = i - 1; j >= 1 && tmp[j] > v; j--) tmp[j+1] = tmp[j]; tmp[j+1] = v }
    i = int(p * cnt + 0.999999); if (i < 1) i = 1; return tmp[i]
  }
  END {
    printf "%-16s %7s %9s %7s %8s %8s\n", "action", "count", "succeeded", "failed", "p50 ms", "p99 ms"
    split("create suspend unsuspend change_package change_password terminate", order, " ")
    for (k = 1; k <= 6; k++) { a = order[k]; if (!(a in n)) continue
      printf "%-16s %7d %9d %7d %8d %8d\n", a, n[a], ok[a], bad[a], pct(lat, a, n[a], 0.5), pct(lat, a, n[a], 0.99) }
  }'
total=$(cat "$DIR"/lat*.txt | wc -l)
echo "$total jobs in ${secs} s"

if [ -z "${COMET_DEMO_SERVER_URL:-}" ]; then
  curl -sf "$SERVER_URL/__fake/state" >"$DIR/state.json"
  python3 - "$DIR/state.json" "$CREATES" "$n10" "$n5" <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); creates, n10, n5 = map(int, sys.argv[2:5])
users = st["users"]; want = creates - n10
suspended = sum(1 for u in users.values() if u["profile"].get("IsSuspended"))
vaults = sorted(set(len(u["profile"].get("Destinations", {})) for u in users.values()))
print(f"fake Comet: {st['user_count']} accounts (expected {want}), {suspended} suspended (expected {n5 - n10}), "
      f"{st['policy_count']} policy groups, vaults per account {vaults}, "
      f"policies/set called {st['calls'].get('policies/set', 0)} times")
ok = st["user_count"] == want and suspended == n5 - n10 and vaults == [1]
print("final state: " + ("as expected" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
PY
  [ $? -eq 0 ] || rc=1
fi

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "the stack keeps running (DEMO_KEEP=1)"
  echo "  config:   $DIR/comet.conf   (source $DIR/svc/env for COMET_AMQP_URL)"
  echo "  enqueue:  bin/comet-enqueue -c $DIR/comet.conf --action suspend --service-id 10001 --server-url $SERVER_URL --username customer10001@example.com --wait"
  echo "  stop:     kill ${PIDS[*]}; scripts/services.sh stop $DIR/svc"
fi
exit $rc
