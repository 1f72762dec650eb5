#!/usr/bin/env bash
# Run a real program with ebbmalloc preloaded and judge the run.
#
#   preload_run.sh [--needs PROG]... LIB PROGRAM [ARG]...
#
# Passes (exit 0) only when
#   - PROGRAM exits 0,
#   - nothing was printed on stderr (no allocator warning, no program error),
#   - every process of the run (PROGRAM and whatever it started) had LIB
#     loaded: the dynamic loader's own log (LD_DEBUG=libs, one file per
#     process) shows LIB's initialiser being called in each.
# Exits 77, which ctest reads as skipped (SKIP_RETURN_CODE), when PROGRAM or
# a --needs PROG is not installed.
set -u

needs=()
while [ "${1:-}" = "--needs" ]; do
  needs+=("$2")
  shift 2
done
if [ $# -lt 2 ]; then
  echo "usage: $0 [--needs PROG]... LIB PROGRAM [ARG]..." >&2
  exit 2
fi
lib=$1
shift
for prog in "$1" "${needs[@]}"; do
  if ! command -v "$prog" >/dev/null 2>&1; then
    echo "SKIP: $prog is not installed"
    exit 77
  fi
done
if [ ! -f "$lib" ]; then
  echo "FAIL: $lib does not exist" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

LD_PRELOAD=$lib LD_DEBUG=libs LD_DEBUG_OUTPUT=$tmp/ld "$@" 2>"$tmp/stderr"
rc=$?

status=0
if [ -s "$tmp/stderr" ]; then
  echo "FAIL: $1 printed on stderr:" >&2
  sed 's/^/  | /' "$tmp/stderr" >&2
  status=1
fi
if [ $rc -ne 0 ]; then
  echo "FAIL: $1 exited with status $rc" >&2
  status=1
fi

name=$(basename "$lib")
procs=0
loaded=0
for log in "$tmp"/ld.*; do
  [ -e "$log" ] || continue
  procs=$((procs + 1))
  if grep -q "calling init: .*/$name\$" "$log"; then
    loaded=$((loaded + 1))
  else
    echo "FAIL: process ${log##*.} ran without $name" >&2
    status=1
  fi
done
if [ $procs -eq 0 ]; then
  echo "FAIL: no process wrote a loader log; cannot tell whether $name was loaded" >&2
  status=1
fi
echo "$name was loaded in $loaded of $procs processes; exit status $rc"
exit $status
