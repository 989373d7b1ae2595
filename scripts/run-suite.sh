#!/usr/bin/env bash
# run-suite.sh LABEL CMD...: runs one test program, tallies its cmocka or
# PHPUnit summary into $TALLY (lines "passed failed label"), keeps its
# output in $TEST_LOG_DIR, and prints a one-line verdict.
set -uo pipefail
label=$1; shift
log="$TEST_LOG_DIR/$(echo "$label" | tr '/ ' '__').log"
start=$(date +%s.%N)
"$@" >"$log" 2>&1
rc=$?
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
# cmocka: "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s), listed below:"
passed=$(grep -aE '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -aE '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
# PHPUnit: "OK (N tests, M assertions)" or "Tests: N, Assertions: M, Failures: F, Errors: E"
if grep -aqE '(^|: )OK \([0-9]+ test' "$log"; then
  passed=$(grep -aoE '(^|: )OK \([0-9]+' "$log" | grep -oE '[0-9]+' | tail -1)
elif grep -aqE '(^|: )Tests: [0-9]+' "$log"; then
  line=$(grep -aE '(^|: )Tests: [0-9]+' "$log" | tail -1)
  total=$(echo "$line" | grep -oE 'Tests: [0-9]+' | grep -oE '[0-9]+')
  f=$(echo "$line" | grep -oE 'Failures: [0-9]+' | grep -oE '[0-9]+' || echo 0)
  e=$(echo "$line" | grep -oE 'Errors: [0-9]+' | grep -oE '[0-9]+' || echo 0)
  s=$(echo "$line" | grep -oE 'Skipped: [0-9]+' | grep -oE '[0-9]+' || echo 0)
  failed=$(( ${f:-0} + ${e:-0} ))
  passed=$(( total - failed - ${s:-0} ))
fi
# A crash or sanitizer report with no summary still counts as a failure.
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if grep -aqE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
  [ "$failed" -eq 0 ] && failed=1
  echo "  sanitizer report in $log" >&2
fi
echo "$passed $failed $label" >>"$TALLY"
if [ "$failed" -eq 0 ]; then
  printf '  ok    %-40s %4d passed  (%ss)\n' "$label" "$passed" "$secs"
else
  printf '  FAIL  %-40s %4d passed, %d failed  (%ss, log %s)\n' "$label" "$passed" "$failed" "$secs" "$log"
  grep -aE '^\[  FAILED  \]|^\[  ERROR   \]|^[0-9]+\) |runtime error|ERROR: AddressSanitizer' "$log" | head -20 | sed 's/^/        /'
fi
exit 0
