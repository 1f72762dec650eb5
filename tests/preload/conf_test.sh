#!/usr/bin/env bash
# EBBMALLOC_CONF as a user meets it, through conf_probe run with ebbmalloc
# preloaded.
#
#   conf_test.sh LIB PROBE warnings   bad entries: one "ebbmalloc: " line
#                                     each, naming the key; defaults kept;
#                                     good entries still applied
#   conf_test.sh LIB PROBE help       EBBMALLOC_CONF=help prints the table
#
# In every case the probe must still run to the end and exit 0.
set -u
lib=$1 probe=$2 mode=$3
failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL [$label]: $*" >&2
  failures=$((failures + 1))
}

# run CONF: the probe's stdout, stderr and status land in $out, $err, $rc.
# An empty CONF means the variable is unset.
run() {
  if [ -n "$1" ]; then
    EBBMALLOC_CONF=$1 LD_PRELOAD=$lib "$probe" narenas >"$tmp/out" 2>"$tmp/err"
  else
    env -u EBBMALLOC_CONF LD_PRELOAD="$lib" "$probe" narenas >"$tmp/out" 2>"$tmp/err"
  fi
  rc=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
  [ $rc -eq 0 ] || fail "probe exited with status $rc; stderr: $err"
  grep -qx "probe ok" "$tmp/out" || fail "probe did not finish; stdout: $out"
}

narenas() { sed -n 's/^narenas=//p' "$tmp/out"; }

# expect CONF NWARN NARENAS [KEY]...: exactly NWARN stderr lines, each
# starting with "ebbmalloc: ", each KEY named in exactly one of them, and
# ebb_option("narenas") == NARENAS afterwards.
expect() {
  local conf=$1 nwarn=$2 want=$3 before=$failures
  shift 3
  label="EBBMALLOC_CONF=$conf"
  run "$conf"
  local lines
  lines=$(grep -c . "$tmp/err")
  [ "$lines" -eq "$nwarn" ] || fail "want $nwarn line(s) on stderr, got $lines: $err"
  if grep -v '^ebbmalloc: ' "$tmp/err" | grep -q .; then
    fail "stderr line not starting with 'ebbmalloc: ': $err"
  fi
  for key in "$@"; do
    [ "$(grep -c -- "$key" "$tmp/err")" -eq 1 ] || fail "no single warning names '$key': $err"
  done
  [ "$(narenas)" = "$want" ] || fail "narenas is '$(narenas)', want '$want'"
  [ $failures -ne $before ] || echo "ok [$label]: $lines warning(s)"
}

label="no EBBMALLOC_CONF"
run ""
default=$(narenas)
[ -z "$err" ] || fail "stderr not empty without EBBMALLOC_CONF: $err"
case "$default" in
  '' | '?' | *[!0-9]*) fail "ebb_option(\"narenas\") gives '$default'; is ebbmalloc preloaded?" ;;
esac

case $mode in
warnings)
  expect "narenas:banana,bogus:1" 2 "$default" narenas bogus
  expect "narenas:1025" 1 "$default" narenas
  expect "narenas:-3" 1 "$default" narenas
  expect "narenas" 1 "$default" narenas
  expect "tcache:maybe" 1 "$default" tcache
  expect "nosuchoption:1" 1 "$default" nosuchoption
  # Good entries around a bad one still apply.
  expect "narenas:3,bogus:1,tcache:false" 1 3 bogus
  expect "narenas:2" 0 2
  expect "narenas:1024" 0 1024
  ;;
help)
  label="EBBMALLOC_CONF=help"
  run help
  grep -q narenas "$tmp/err" || fail "help does not mention narenas: $err"
  grep -q tcache "$tmp/err" || fail "help does not mention tcache: $err"
  [ "$(grep -c . "$tmp/err")" -ge 2 ] || fail "help is not a table: $err"
  [ -z "$(grep -v '^narenas=\|^probe ok$' "$tmp/out")" ] || fail "help went to stdout: $out"
  [ "$(narenas)" = "$default" ] || fail "help changed narenas to '$(narenas)'"
  echo "ok [$label]: $(grep -c . "$tmp/err") lines of help on stderr"
  ;;
*)
  echo "usage: $0 LIB PROBE warnings|help" >&2
  exit 2
  ;;
esac

[ $failures -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
