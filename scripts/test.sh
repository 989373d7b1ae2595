#!/usr/bin/env bash
# make test: builds the normal and the sanitizer trees, starts private
# RabbitMQ, Redis and MariaDB instances, runs the unit tests, the
# integration tests (real services + the fake Comet) and the PHP tests, in
# both trees where they are C, stops everything, and ends with
# "N passed, N failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export TEST_TMP=$(mktemp -d /tmp/comet-test.XXXXXX)
export TEST_LOG_DIR=$TEST_TMP/logs
export TALLY=$TEST_TMP/tally
mkdir -p "$TEST_LOG_DIR"
: >"$TALLY"

cleanup() {
  scripts/services.sh stop "$TEST_TMP/svc" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build (normal and ASan+UBSan)"
if ! make -j2 tests-bin >"$TEST_LOG_DIR/build.log" 2>&1 || \
   ! make -j2 san >"$TEST_LOG_DIR/build-san.log" 2>&1; then
  tail -40 "$TEST_LOG_DIR"/build*.log
  echo "0 passed, 1 failed"
  exit 1
fi

echo "== services"
if ! scripts/services.sh start "$TEST_TMP/svc" rabbitmq redis mariadb; then
  echo "0 passed, 1 failed"
  exit 1
fi
# shellcheck disable=SC1091
. "$TEST_TMP/svc/env"

unit_tests=$(ls tests/unit/test_*.c 2>/dev/null | xargs -rn1 basename | sed 's/\.c$//')
integ_tests=$(ls tests/integration/test_*.c 2>/dev/null | xargs -rn1 basename | sed 's/\.c$//')

for tree in build build-san; do
  echo "== unit tests ($tree)"
  for t in $unit_tests; do
    scripts/run-suite.sh "$tree/$t" "$tree/tests/$t"
  done
done

for tree in build build-san; do
  echo "== integration tests ($tree)"
  bindir=bin; [ "$tree" = build-san ] && bindir=build-san/bin
  for t in $integ_tests; do
    COMET_TEST_ROOT="$ROOT" COMET_TEST_BIN_DIR="$ROOT/$bindir" COMET_TEST_TMP="$TEST_TMP/$tree-$t" \
      scripts/run-suite.sh "$tree/$t" "$tree/tests/$t"
  done
done

if [ -x scripts/php-test.sh ]; then
  echo "== PHP tests"
  scripts/run-suite.sh "php" scripts/php-test.sh "$TEST_TMP/svc"
fi

passed=$(awk '{s+=$1} END {print s+0}' "$TALLY")
failed=$(awk '{s+=$2} END {print s+0}' "$TALLY")
echo
echo "logs: $TEST_LOG_DIR"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
