#!/usr/bin/env bash
# git under ebbmalloc: build a small history in a temporary repository,
# read it back, repack it with gc and verify it with fsck. Quiet unless
# something fails (preload_run.sh treats any stderr output as a failure).
set -euo pipefail

repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
cd "$repo"
export GIT_CONFIG_NOSYSTEM=1 HOME=$repo GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" \
       GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"
git -c init.defaultBranch=main init -q .
git config user.name "ebbmalloc test"
git config user.email "test@ebbmalloc.invalid"
git config gc.auto 0

commits=20
for c in $(seq 1 $commits); do
  # 40 files that change a little each commit, so packing finds deltas.
  awk -v c="$c" 'BEGIN { for (f = 1; f <= 40; f++) { fn = "file" f ".txt"
    for (i = 1; i <= f * 20; i++) print i > fn
    print "commit " c " file " f > fn; close(fn) } }'
  head -c $((c * 5000)) /dev/zero | tr '\0' "$(printf "\\$(printf %o $((65 + c)))")" >"blob$c.bin"
  git add -A
  git commit -q -m "commit $c"
done

[ "$(git log --oneline | wc -l)" -eq $commits ] || { echo "git log lost commits" >&2; exit 1; }
git log -p --stat >/dev/null
git gc -q --prune=now
git fsck --no-progress --strict >/dev/null
[ "$(git count-objects -v | sed -n 's/^count: //p')" -eq 0 ] || { echo "gc left loose objects" >&2; exit 1; }
[ "$(git show HEAD~5:file7.txt | tail -n 1)" = "commit 15 file 7" ] || { echo "wrong blob" >&2; exit 1; }
[ "$(git cat-file -s HEAD:blob20.bin)" -eq 100000 ] || { echo "wrong blob size" >&2; exit 1; }
echo "git: $commits commits, gc and fsck passed"
