#!/usr/bin/env bash
# Median ns/op of the overhead program with stats_shm on and off, runs
# interleaved; prints the ratio. Usage: overhead.sh BUILD_DIR [RUNS] [THREADS]
set -euo pipefail
bin="$1/tests/stats/stats_overhead"; runs="${2:-9}"; threads="${3:-1}"
on=(); off=()
for ((i = 0; i < runs; i++)); do
  on+=("$(EBBMALLOC_CONF=stats_shm:true,stats_interval_ms:10 "$bin" "$threads" 20 | awk '{print $2}')")
  off+=("$(EBBMALLOC_CONF=stats_shm:false "$bin" "$threads" 20 | awk '{print $2}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
echo "stats_shm:true (page refreshed every 10 ms): median $m_on ns/op over $runs runs"
echo "stats_shm:false: median $m_off ns/op over $runs runs"
awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "ratio true/false: %.4f\n", a / b}'
