#!/usr/bin/env bash
# RocksDB under ebbmalloc (db_bench, Debian's rocksdb-tools): the native
# store behind many JVM services (through RocksDB JNI), and one of the
# heaviest users of malloc there is: memtable arenas, block cache entries,
# compaction buffers, on 4 threads. Writes keys in order, reads every one
# back at random (all must be found), overwrites at random while reading,
# compacts, and has ldb check the files and count the keys. Quiet unless
# something fails (preload_run.sh treats any stderr output as a failure).
set -euo pipefail

num=${1:-100000}
db=$(mktemp -d)
out=$db.out
err=$db.err
trap 'rm -rf "$db" "$out" "$err"' EXIT

# db_bench writes its banner and progress ("... finished N ops", ended by
# carriage returns) on stderr: those go; anything else on stderr (an
# allocator's warning, an error) is passed on for preload_run.sh to see.
status=0
db_bench --db="$db/db" --benchmarks=fillseq,readrandom,readwhilewriting,compact \
  --num="$num" --threads=4 --value_size=400 --cache_size=33554432 \
  --write_buffer_size=4194304 --compression_type=snappy --seed=42 >"$out" 2>"$err" || status=$?
tr '\r' '\n' <"$err" | grep -vE '^(RocksDB|Date|CPU|CPUCache): |^\.\.\. finished [0-9]+ ops *$|^ *$' >&2 || true
if [ $status -ne 0 ]; then
  echo "db_bench exited with status $status" >&2
  exit 1
fi

# readrandom looks num keys up at random: every one must be there.
found=$(sed -n 's/^readrandom .*(\([0-9]*\) of \([0-9]*\) found).*/\1 \2/p' "$out")
read -r got want <<<"$found"
if [ -z "${got:-}" ] || [ "$got" != "$want" ] || [ "$want" -ne "$num" ]; then
  echo "readrandom found '${found}' of $num keys:" >&2
  cat "$out" >&2
  exit 1
fi
ldb --db="$db/db" checkconsistency >/dev/null
keys=$(ldb --db="$db/db" scan 2>/dev/null | wc -l)
if [ "$keys" -ne "$num" ]; then
  echo "ldb scan counted $keys keys, not $num" >&2
  exit 1
fi
