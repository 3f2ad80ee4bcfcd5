#!/usr/bin/env bash
# The router through the real broker: fills a fresh ingress topic with
# synthetic load, then times one router instance draining it into a fresh
# task topic. Prints samples/s, the router's CPU seconds and the bytes per
# sample the task topic stores on the broker.
#
#   scripts/bench-router.sh [series] [samples-per-series]
#
# RECORD_ENCODING=identity|snappy|zstd sets the route's record_encoding.
# RATE=<samples/s>: start the router first and fill the ingress topic at
#   that rate while it runs (produce --rate), so the router's batches are
#   what that traffic gives per router.commit_interval; unset, the topic is
#   filled first and drained as fast as the router goes (large batches).
# KAFKA_PROPERTIES="k=v,k=v": kafka.properties for every client (e.g.
#   compression.level=6,linger.ms=50).
# BENCH_BIN=<path>: run that binary, no cargo build (the tree may be mid-edit).
# Router settings go through figment, e.g. STREAMROUTE_ROUTER__COMMIT_INTERVAL=1s.
#
# Needs the local broker (its log directory is read), started if missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SERIES=${1:-20000}
SAMPLES=${2:-10}
TOTAL=$((SERIES * SAMPLES))
if [ -n "${BENCH_BIN:-}" ]; then
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  LOGS="$RUN_DIR/kafka-$KAFKA_PORT/logs"
  [ -n "${KAFKA_BOOTSTRAP:-}" ] && die "needs the local broker's log directory; unset KAFKA_BOOTSTRAP"
  scripts/kafka-local.sh start
  BIN="$BENCH_BIN"
else
  bench_local_broker
fi

WORK="$RUN_DIR/bench-router"
rm -rf "$WORK"; mkdir -p "$WORK/topics"
id="$(date +%s)$RANDOM"
INGRESS="bench.router.ingress.$id" TASKS="bench.router.tasks.$id"
for t in "$INGRESS" "$TASKS"; do
  printf 'name = "%s"\npartitions = 4\nreplication_factor = 1\n[config]\n"compression.type" = "producer"\n"max.message.bytes" = "34603008"\n' \
    "$t" > "$WORK/topics/$t.toml"
done
cat > "$WORK/config.toml" <<TOML
[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
[kafka.properties]
$(IFS=,; for kv in ${KAFKA_PROPERTIES:-}; do printf '"%s" = "%s"\n' "${kv%%=*}" "${kv#*=}"; done)
[topics]
ingress = "$INGRESS"
[run]
roles = ["router"]
listen = "127.0.0.1:9212"
[router]
group_id = "bench-router-$id"
[[router.routes]]
name = "bench"
topic = "$TASKS"
task_count = 64
record_encoding = "${RECORD_ENCODING:-identity}"
TOML
"$BIN" -c "$WORK/config.toml" topics apply --dir "$WORK/topics" >/dev/null
produce() {
  log "producing $TOTAL samples into $INGRESS${RATE:+ at $RATE samples/s}"
  "$BIN" -c "$WORK/config.toml" produce --generate --series "$SERIES" --samples-per-series "$SAMPLES" \
    --rate "${RATE:-0}" 2>&1 | tail -1
}
[ -z "${RATE:-}" ] && produce

out() { curl -fsS http://127.0.0.1:9212/metrics 2>/dev/null \
  | awk '/^streamroute_router_samples_total\{.*outcome="out"/ { s += $2 } END { printf "%d", s }'; }
"$BIN" -c "$WORK/config.toml" run >"$WORK/router.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
if [ -n "${RATE:-}" ]; then
  until curl -fsS http://127.0.0.1:9212/-/ready >/dev/null 2>&1; do
    kill -0 $PID 2>/dev/null || die "router exited, see $WORK/router.log"
    sleep 0.2
  done
  ticks0=$(awk '{print $14 + $15}' /proc/$PID/stat)
  produce &
fi
start=$(date +%s.%N)
until [ "$(out)" -ge "$TOTAL" ]; do
  kill -0 $PID 2>/dev/null || die "router exited, see $WORK/router.log"
  sleep 0.2
done
end=$(date +%s.%N)
ticks=$(( $(awk '{print $14 + $15}' /proc/$PID/stat) - ${ticks0:-0} ))
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT
sleep 1
bytes=$(cat "$LOGS/$TASKS"-*/*.log | wc -c)
awk -v n="$TOTAL" -v s="$start" -v e="$end" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v b="$bytes" 'BEGIN {
  printf "router: %d samples in %.2f s (incl. start-up) = %.0f samples/s, %.2f CPU s (%.0f samples per CPU second)\n", n, e - s, n / (e - s), t / hz, n / (t / hz)
  printf "router CPU: %.2f us/sample\n", t / hz / n * 1e6
  printf "task topic on the broker: %.1f bytes/sample\n", b / n }'
