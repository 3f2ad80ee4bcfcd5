#!/usr/bin/env bash
# The whole pipeline through the real broker: remote write → gateway →
# ingress topic → router → task topic → egress → vmagent → VictoriaMetrics,
# all roles in one `streamroute run` process on fresh topics. Pushes a fixed
# load and prints the samples/s sustained end to end, the end-to-end latency
# percentiles, the CPU seconds and RSS of streamroute, the broker, vmagent,
# VictoriaMetrics and the load tool, and checks every sample arrived.
#
#   scripts/bench-e2e.sh [series] [samples-per-series] [rate]
#   BENCH_BIN=/path/to/streamroute scripts/bench-e2e.sh   another build (the code before a change, say)
#
# Defaults: 20,000 series × 30 samples at 20,000 samples/s (600,000 samples,
# ~30 s of load). Uses the local test bed (scripts/kafka-local.sh,
# scripts/vm-local.sh), started if missing and left running; the broker's
# CPU is only measurable when it is local, so KAFKA_BOOTSTRAP is refused.
#
# How latency is measured. `streamroute produce --generate` stamps a
# series' samples "now - (M-1-step) × interval" from one "now" taken at
# start, so its timestamps are not send times. Instead the helper
# examples/e2e_bench.rs is both the sender and the egress target, so one
# clock does both ends:
#   - it POSTs the load to the gateway like Prometheus (snappy, 2,000 series
#     per request, paced, 8 requests in flight), every sample stamped with
#     the wall clock in ms just before its request is sent; 503s are retried
#     with the same timestamps, so retries count as latency;
#   - egress's `target` is its capture receiver, which passes each request
#     on to vmagent and answers egress with vmagent's status. A sample
#     arrives when vmagent accepted it; latency = arrival − timestamp.
#   Sustained samples/s = samples / (first send → last arrival). A warm-up
#   sample goes through first, so group joins and connection set-up are
#   not in the figures. Finally VictoriaMetrics is queried until it holds
#   every sample of the run (label bench_run="<id>"), and the extra wait
#   after the last arrival is printed (vmagent flushes every 200 ms).
# CPU (utime+stime from /proc/<pid>/stat) and peak RSS (VmRSS every 0.5 s)
# are taken over the same first-send → last-arrival window by the helper.
# The egress, router and gateway settings are the defaults (router commit
# every 500 ms, egress flush after 1 s or 5,000 samples): latency here is
# mostly those two lingers.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SERIES=${1:-20000}
SAMPLES=${2:-30}
RATE=${3:-20000}
KAFKA_PORT="${KAFKA_PORT:-9092}"
VM_PORT="${VM_PORT:-8428}"
VMAGENT_PORT="${VMAGENT_PORT:-8429}"
# Not 9201-9203 (a running demo or `run` with config/local.toml) nor 9212 (bench-router.sh).
LISTEN="127.0.0.1:${BENCH_E2E_PORT:-9221}"
CAPTURE="127.0.0.1:${BENCH_E2E_CAPTURE_PORT:-9222}"

[ -n "${KAFKA_BOOTSTRAP:-}" ] && die "measures the local broker's CPU; unset KAFKA_BOOTSTRAP"
for addr in "$LISTEN" "$CAPTURE"; do
  port_open "${addr%:*}" "${addr#*:}" && die "$addr is in use (set BENCH_E2E_PORT / BENCH_E2E_CAPTURE_PORT)"
done

# The test bed: both scripts are idempotent and reuse what already runs.
scripts/kafka-local.sh start
scripts/vm-local.sh start
cargo build --release --quiet --bin streamroute --example e2e_bench
BIN="${BENCH_BIN:-$ROOT/target/release/streamroute}"
TOOL="$ROOT/target/release/examples/e2e_bench"

# Everything of this run is fresh, so nothing earlier (offsets, egress
# positions, VictoriaMetrics series) can blur the figures.
id="$(date +%s)$RANDOM"
WORK="$RUN_DIR/bench-e2e.$id"
mkdir -p "$WORK/topics"
INGRESS="bench.e2e.ingress.$id" TASKS="bench.e2e.tasks.$id" DEAD="bench.e2e.dead-letter.$id"

# write_topic NAME PARTITIONS: a topic file like those in topics/.
write_topic() {
  printf 'name = "%s"\npartitions = %d\nreplication_factor = 1\n[config]\n"compression.type" = "producer"\n"max.message.bytes" = "34603008"\n' \
    "$1" "$2" > "$WORK/topics/$1.toml"
}
write_topic "$INGRESS" 4
write_topic "$TASKS" 4
write_topic "$DEAD" 1

cat > "$WORK/config.toml" <<TOML
[log]
level = "warn"
[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
[topics]
ingress = "$INGRESS"
dead_letter = "$DEAD"
[run]
roles = ["gateway", "router", "egress"]
listen = "$LISTEN"
[router]
group_id = "bench-e2e-$id"
[[router.routes]]
name = "bench"
topic = "$TASKS"
task_count = 64
[egress]
topic = "$TASKS"
partitions = "all"
# The capture receiver of e2e_bench, which forwards to vmagent.
target = "http://$CAPTURE/api/v1/write"
state_dir = "$WORK/egress-state"
TOML
"$BIN" -c "$WORK/config.toml" topics apply --dir "$WORK/topics" >/dev/null

# Stop only what this script started; the test bed stays up.
SR_PID=""
cleanup() {
  if [ -n "$SR_PID" ] && kill -0 "$SR_PID" 2>/dev/null; then
    kill "$SR_PID" 2>/dev/null || true
    wait "$SR_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$BIN" -c "$WORK/config.toml" run >"$WORK/streamroute.log" 2>&1 &
SR_PID=$!
for _ in $(seq 1 120); do
  curl -fsS "http://$LISTEN/-/ready" >/dev/null 2>&1 && break
  kill -0 "$SR_PID" 2>/dev/null || die "streamroute exited, see $WORK/streamroute.log"
  sleep 0.5
done
curl -fsS "http://$LISTEN/-/ready" >/dev/null || die "streamroute not ready after 60 s, see $WORK/streamroute.log"

echo "load before: $(uptime)"
rc=0
"$TOOL" --gateway "http://$LISTEN/api/v1/write" --listen "$CAPTURE" \
  --forward "http://127.0.0.1:$VMAGENT_PORT/api/v1/write" --vm "http://127.0.0.1:$VM_PORT" \
  --series "$SERIES" --samples-per-series "$SAMPLES" --rate "$RATE" --run-id "$id" \
  --clk-tck "$(getconf CLK_TCK)" \
  --watch "streamroute=$SR_PID" \
  --watch "kafka broker=$(cat "$RUN_DIR/kafka-$KAFKA_PORT.pid")" \
  --watch "vmagent=$(cat "$RUN_DIR/vmagent-$VMAGENT_PORT.pid")" \
  --watch "victoria-metrics=$(cat "$RUN_DIR/victoria-metrics-$VM_PORT.pid")" \
  || rc=$?
echo "load after:  $(uptime)"
kill -0 "$SR_PID" 2>/dev/null || { log "streamroute died during the run, see $WORK/streamroute.log"; rc=1; }
cleanup
SR_PID=""
# The topics stay on the broker (it never deletes); the local files go.
[ "$rc" -eq 0 ] && rm -rf "$WORK" || log "kept $WORK for inspection"
exit "$rc"
