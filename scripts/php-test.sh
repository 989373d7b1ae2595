#!/usr/bin/env bash
# Runs the WHMCS module's PHPUnit tests against real RabbitMQ and MariaDB.
#   scripts/php-test.sh [DIR] [phpunit args...]
# DIR: a services directory from `scripts/services.sh start DIR` (its env
# is used). Without one (and without COMET_AMQP_URL/MYSQL_* in the
# environment) the script starts private services itself and stops them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
own=""
if [ $# -gt 0 ] && [ -d "$1" ]; then
  dir=$1; shift
  # shellcheck disable=SC1091
  . "$dir/env"
elif [ -z "${COMET_AMQP_URL:-}" ] || [ -z "${MYSQL_HOST:-}" ]; then
  own=$(mktemp -d /tmp/comet-php-test.XXXXXX)
  trap '"$root/scripts/services.sh" stop "$own" >/dev/null; rm -rf "$own"' EXIT
  "$root/scripts/services.sh" start "$own" rabbitmq mariadb
  # shellcheck disable=SC1091
  . "$own/env"
fi
cd "$root/tests/php"
log=$(mktemp)
set +e
phpunit -c phpunit.xml "$@" >"$log" 2>&1
rc=$?
set -e
# Failures in full, then phpunit's summary line.
if [ "$rc" -ne 0 ]; then sed -n '/^There w[ae][sr]e* /,$p' "$log" | head -200; fi
# The end-to-end test's figures (tests/php/E2ETest.php prints "e2e: ..." lines).
grep -aoE 'e2e: .*' "$log" || true
summary=$(grep -E '^(OK \(|Tests: |OK, but|No tests)' "$log" | tail -1)
[ -n "$summary" ] || { cat "$log"; summary="phpunit did not finish (rc=$rc)"; }
rm -f "$log"
echo "php-test: $summary"
exit "$rc"
