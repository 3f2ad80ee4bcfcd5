#!/usr/bin/env bash
# Mutation testing of the pure cores with cargo-mutants (not in CI).
#
#   scripts/mutants.sh [GROUP...]    # default: every group, in this order
#
# Groups: route task_id relabel goregex state topics validate readers.
# Each group runs its files' mutants against the unit tests of its module
# (`cargo test --lib <filter>`), as two shards in parallel, each in place in
# its own git worktree (../wt-mut0, ../wt-mut1) with a warm target, linked
# with mold and built without debug info: about 5 s per mutant on 2 cores,
# where a copied tree rebuilds every dependency first. Results per group and
# shard in target/mutants/GROUP.K/mutants.out (missed.txt, caught.txt,
# timeout.txt, unviable.txt).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo-mutants >/dev/null || die "cargo install cargo-mutants --locked"
command -v mold >/dev/null || apt_install mold
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
export CARGO_PROFILE_DEV_DEBUG=0
# The property tests find what they find in far fewer cases than CI runs.
export PROPTEST_CASES="${PROPTEST_CASES:-64}"
OUT="$ROOT/target/mutants"
mkdir -p "$OUT"

worktree() { # K: a worktree at HEAD with its library tests built
  local wt="$ROOT/../wt-mut$1"
  if [ ! -d "$wt" ]; then
    git -C "$ROOT" worktree add --detach "$wt" HEAD >/dev/null
  fi
  git -C "$wt" checkout -q --detach "$(git -C "$ROOT" rev-parse HEAD)"
  (cd "$wt" && cargo test --lib --no-run -q >/dev/null 2>&1) || die "build failed in $wt"
  echo "$wt"
}

run() { # NAME FILTER FILE...
  local name=$1 filter=$2
  shift 2
  local files=()
  for f in "$@"; do files+=(--file "$f"); done
  log "mutants: $name"
  for k in 0 1; do
    (cd "${WT[$k]}" && cargo mutants --in-place --shard "$k/2" --timeout 60 --baseline skip \
      "${files[@]}" --exclude-re 'fmt|Display' -o "$OUT/$name.$k" -C --lib -- "$filter" \
      >"$OUT/$name.$k.log" 2>&1) &
  done
  wait || true
  log "$name: $(tail -1 "$OUT/$name.0.log") | $(tail -1 "$OUT/$name.1.log")"
  cat "$OUT/$name".*/mutants.out/missed.txt
}

WT=("$(worktree 0)" "$(worktree 1)")
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(route task_id relabel goregex state topics validate readers)
for g in "${groups[@]}"; do
  case $g in
  route) run route router:: src/router/route.rs ;;
  task_id) run task_id router:: src/router/task_id.rs ;;
  relabel) run relabel relabel:: src/relabel/engine.rs src/relabel/compile.rs \
    src/relabel/builder.rs src/relabel/config.rs src/relabel/case.rs src/relabel/template.rs \
    src/relabel/mod.rs ;;
  goregex) run goregex relabel:: src/relabel/goregex.rs src/relabel/goregex_class.rs ;;
  state) run state state:: 'src/state/**' ;;
  topics) run topics topics:: src/topics/mod.rs ;;
  validate) run validate remote_write:: src/remote_write/validate.rs \
    src/remote_write/validate/histogram.rs ;;
  readers) run readers remote_write:: src/remote_write/fast.rs src/remote_write/fast/v2.rs \
    src/remote_write/fast/wire.rs src/remote_write/decode.rs ;;
  *) die "unknown group $g" ;;
  esac
done
