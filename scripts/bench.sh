#!/usr/bin/env bash
# make bench: starts private RabbitMQ and Redis (scripts/services.sh), runs
# bench/bench.py (hand-off, end to end matrix, sequential baseline, broker
# ceiling, worker cost) against the fake Comet, prints one table and writes
# bench/results/bench-<time>.{json,dat,png} (latest.* point at the newest).
# BENCH_QUICK=1: fewer points, for a smoke run. Bounded to ~10 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/comet-bench.XXXXXX)
cleanup() {
  scripts/services.sh stop "$WORK/svc" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v gnuplot >/dev/null || { echo "bench: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
for b in comet-worker fake-comet comet-enqueue comet-bench; do
  [ -x "bin/$b" ] || { echo "bench: bin/$b missing: run make" >&2; exit 1; }
done

scripts/services.sh start "$WORK/svc" rabbitmq redis >"$WORK/services.log" 2>&1 || {
  cat "$WORK/services.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$WORK/svc/env"
mkdir -p "$WORK/run"
args=(--bin bin --work "$WORK/run" --results bench/results)
[ "${BENCH_QUICK:-0}" = 1 ] && args+=(--quick)
# A hard stop well past the expected ~5 minutes so make bench never hangs.
timeout --signal=TERM 900 python3 bench/bench.py "${args[@]}"
echo "bench: logs in $WORK/run"
