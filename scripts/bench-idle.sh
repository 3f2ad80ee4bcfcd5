#!/usr/bin/env bash
# What an idle `streamroute run` (gateway, router and egress, four ingress
# and four task partitions, as scripts/bench-vs-vmagent.sh runs it) costs:
# CPU per thread name over a quiet window, the total as % of a core, and
# the local broker's CPU meanwhile (and alone, before).
# Nothing is sent; what it spends is polling and timers, a fixed cost that
# every sample pays a share of at low rates.
#
#   scripts/bench-idle.sh [seconds] [binary...]
#
# Defaults: 20 s, target/release/streamroute (built). Several binaries are
# measured one after the other on the same topics (the code before a
# change, say). Uses the local broker (scripts/kafka-local.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SECS=${1:-20}
shift || true
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
  cargo build --release --quiet --bin streamroute
  BINS=("$ROOT/target/release/streamroute")
fi
KAFKA_PORT="${KAFKA_PORT:-9092}"
PORT="${BENCH_IDLE_PORT:-9261}"
port_open 127.0.0.1 "$PORT" && die "127.0.0.1:$PORT is in use (set BENCH_IDLE_PORT)"
scripts/kafka-local.sh start

id="$(date +%s)$RANDOM"
WORK="$RUN_DIR/bench-idle.$id"
mkdir -p "$WORK/topics"
trap 'rm -rf "$WORK"' EXIT
for t in ingress:4 tasks:4 dead-letter:1; do
  printf 'name = "bench.idle.%s.%s"\npartitions = %d\nreplication_factor = 1\n' \
    "${t%%:*}" "$id" "${t##*:}" > "$WORK/topics/${t%%:*}.toml"
done
cat > "$WORK/idle.toml" <<TOML
[log]
level = "warn"
[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
[topics]
ingress = "bench.idle.ingress.$id"
dead_letter = "bench.idle.dead-letter.$id"
[run]
roles = ["gateway", "router", "egress"]
listen = "127.0.0.1:$PORT"
[router]
group_id = "bench-idle-$id"
[[router.routes]]
name = "idle"
topic = "bench.idle.tasks.$id"
task_count = 64
[egress]
topic = "bench.idle.tasks.$id"
partitions = "all"
# Nothing is sent, so nothing needs to listen here.
target = "http://127.0.0.1:$((PORT + 1))/api/v1/write"
state_dir = "$WORK/egress-state"
TOML
"${BINS[0]}" -c "$WORK/idle.toml" topics apply --dir "$WORK/topics" >/dev/null

# ticks PID: "thread-name ticks" per thread name (utime + stime).
ticks() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
hz=$(getconf CLK_TCK)
BROKER_PID=$(cat "$RUN_DIR/kafka-$KAFKA_PORT.pid")
broker_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }
# The broker's own idle cost first, with no streamroute beside it.
b0=$(broker_ticks); sleep "$SECS"; b1=$(broker_ticks)
awk -v d=$((b1 - b0)) -v s="$SECS" -v hz="$hz" 'BEGIN {printf "the broker alone, %d s: %.2f%% of a core\n", s, 100 * d / hz / s}'
for bin in "${BINS[@]}"; do
  "$bin" -c "$WORK/idle.toml" run >"$WORK/run.log" 2>&1 &
  pid=$!
  # Start-up (joining the group, assigning partitions) is not idle time.
  sleep 8
  kill -0 "$pid" 2>/dev/null || die "$bin exited, see $WORK/run.log"
  ticks "$pid" >"$WORK/before"; b0=$(broker_ticks)
  sleep "$SECS"
  ticks "$pid" >"$WORK/after"; b1=$(broker_ticks)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$bin, idle for $SECS s:"
  join -a 2 -e 0 -o 0,1.2,2.2 "$WORK/before" "$WORK/after" |
    awk -v s="$SECS" -v hz="$hz" '{d = $3 - $2; total += d; if (d > 0) printf "  %-18s %5.2f%% of a core\n", $1, 100 * d / hz / s}
      END {printf "  %-18s %5.2f%% of a core\n", "total", 100 * total / hz / s}'
  awk -v d=$((b1 - b0)) -v s="$SECS" -v hz="$hz" 'BEGIN {printf "  %-18s %5.2f%% of a core\n", "the broker", 100 * d / hz / s}'
done
