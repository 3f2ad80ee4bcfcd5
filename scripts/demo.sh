#!/usr/bin/env bash
# The main job on one machine: a real Kafka broker, VictoriaMetrics and
# vmagent, the topics from topics/, `streamroute run` with config/local.toml,
# a real Prometheus remote-writing to the gateway and `streamroute produce
# --generate` for volume. Prints a live progress line and a summary, then
# stops everything it started.
#
#   scripts/demo.sh [--keep] [--seconds N]
#
# --keep leaves everything running and prints the URLs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

KEEP=0
SECONDS_TO_RUN=30
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --seconds) SECONDS_TO_RUN=$2; shift ;;
    *) die "usage: $0 [--keep] [--seconds N]" ;;
  esac
  shift
done

scripts/setup.sh
log "building streamroute (release)"
cargo build --release --locked --quiet
BIN="$ROOT/target/release/streamroute"
CONFIG="$ROOT/config/local.toml"
PROM_PORT=9090
PIDS=()

# Stop only what this script started: a test bed that was already up stays up.
STARTED_KAFKA=0 STARTED_VM=0
scripts/kafka-local.sh status >/dev/null 2>&1 || STARTED_KAFKA=1
scripts/vm-local.sh status >/dev/null 2>&1 || STARTED_VM=1
cleanup() {
  [ "$KEEP" = 1 ] && return 0
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ "$STARTED_VM" = 1 ] && { scripts/vm-local.sh stop || true; }
  [ "$STARTED_KAFKA" = 1 ] && { scripts/kafka-local.sh stop || true; }
  return 0
}
trap cleanup EXIT

scripts/kafka-local.sh start
scripts/vm-local.sh start
"$BIN" -c "$CONFIG" topics apply

port_open 127.0.0.1 9201 && die "127.0.0.1:9201 is taken; stop whatever listens there"
"$BIN" -c "$CONFIG" run >"$RUN_DIR/streamroute.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9201/-/ready >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS http://127.0.0.1:9201/-/ready >/dev/null || die "streamroute did not become ready, see $RUN_DIR/streamroute.log"
log "streamroute ready on 127.0.0.1:9201 (log: $RUN_DIR/streamroute.log)"

mkdir -p "$RUN_DIR/prometheus"
sed "s/@PROM_PORT@/$PROM_PORT/" scripts/demo/prometheus.yml.in >"$RUN_DIR/prometheus/prometheus.yml"
port_open 127.0.0.1 $PROM_PORT && die "127.0.0.1:$PROM_PORT is taken; stop whatever listens there"
prometheus --config.file="$RUN_DIR/prometheus/prometheus.yml" --web.listen-address=127.0.0.1:$PROM_PORT \
  --storage.tsdb.path="$RUN_DIR/prometheus/data" >"$RUN_DIR/prometheus.log" 2>&1 &
PIDS+=($!)
log "prometheus on 127.0.0.1:$PROM_PORT remote-writes to the gateway"

"$BIN" -c "$CONFIG" produce --generate --series 20000 --samples-per-series 30 --rate 20000 \
  >"$RUN_DIR/produce.log" 2>&1 &
PRODUCE_PID=$!
PIDS+=($PRODUCE_PID)

# Sum of a metric over all its label sets.
metric() { curl -fsS http://127.0.0.1:9201/metrics | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'; }
# Router samples by outcome: in, out (routed) or dropped (by relabeling).
router_samples() { curl -fsS http://127.0.0.1:9201/metrics | awk -v o="$1" '/^streamroute_router_samples_total\{/ && index($0, "outcome=\"" o "\"") { s += $2 } END { printf "%d", s }'; }
routed() { router_samples out; }
sent() { metric streamroute_egress_samples_total; }
lag() { curl -fsS http://127.0.0.1:9201/metrics | awk '/^streamroute_router_consumer_lag_records/ { s += $2 } END { printf "%d", s }'; }
vm_query() { curl -fsS --get http://127.0.0.1:8428/api/v1/query --data-urlencode "query=$1"; }

# The flowing period: from the first sample egress sent to the last
# change, so start-up (group join, first fetch) does not dilute the rate.
t0=$SECONDS
first_at="" last_at="" first_sent=0 last_sent=0
track() {
  local now=$1 s=$2
  if [ -z "$first_at" ] && [ "$s" -gt 0 ]; then first_at=$now first_sent=$s; fi
  if [ "$s" -gt "$last_sent" ]; then last_at=$now last_sent=$s; fi
}
while [ $((SECONDS - t0)) -lt "$SECONDS_TO_RUN" ]; do
  s=$(sent)
  track "$SECONDS" "$s"
  printf '\r[%3ds] received %s (gateway) | routed %s | sent to vmagent %s | lag %s records   ' \
    $((SECONDS - t0)) "$(metric streamroute_gateway_samples_total)" "$(routed)" "$s" "$(lag)"
  sleep 1
done
echo
wait "$PRODUCE_PID" 2>/dev/null || true
# Let the last transactions and sends finish.
for _ in $(seq 1 30); do
  track "$SECONDS" "$(sent)"
  [ "$(lag)" = 0 ] && [ "$(sent)" -ge "$(routed)" ] && break
  sleep 1
done
elapsed=$((SECONDS - t0))
sleep 2 # vmagent flushes every 200 ms; VictoriaMetrics makes new series searchable within a second or so
echo
echo "== summary (${elapsed} s)"
from_prometheus=$(metric streamroute_gateway_samples_total)
produced=$(tail -1 "$RUN_DIR/produce.log" | sed -n 's/.* payloads, \([0-9]*\) samples,.*/\1/p')
router_in=$(router_samples in)
earlier=$((router_in - from_prometheus - ${produced:-0}))
echo "gateway:  $from_prometheus samples from Prometheus"
tail -1 "$RUN_DIR/produce.log" | sed 's/^/produce:  /'
echo "router:   $router_in samples read, $(router_samples dropped) dropped by the route's relabel rule (go_gc_*, go_memstats_*), $(routed) routed into streamroute.tasks.default"
if [ "$earlier" -gt 0 ]; then
  echo "          ($earlier of those were left in the ingress topic by an earlier run and routed now)"
fi
rate=$(awk -v a="$first_sent" -v b="$last_sent" -v t0="$first_at" -v t1="$last_at" \
  'BEGIN { if (t1 > t0) printf "%.0f samples/s from the first to the last sample sent (%d s)", (b - a) / (t1 - t0), t1 - t0; else print "too short to measure a rate" }')
echo "egress:   $(sent) samples sent to vmagent; $rate"
series=$(vm_query 'count({stream_task_id!=""})' | sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)".*/\1/p')
echo "VictoriaMetrics: ${series:-0} series carry stream_task_id; series per task (first 8 of 64):"
vm_query 'sort_desc(count by (stream_task_id) ({stream_task_id!=""}))' \
  | grep -o '"stream_task_id":"[0-9]*"},"value":\[[^,]*,"[0-9]*"' \
  | sed 's/"stream_task_id":"\([0-9]*\)"},"value":\[[^,]*,"\([0-9]*\)"/  task \1: \2 series/' | head -8
if [ "$KEEP" = 1 ]; then
  echo
  echo "left running:"
  echo "  gateway + /metrics   http://127.0.0.1:9201/metrics"
  echo "  prometheus           http://127.0.0.1:$PROM_PORT"
  echo "  victoria-metrics     http://127.0.0.1:8428/vmui"
  echo "  vmagent              http://127.0.0.1:8429"
  echo "  kafka                127.0.0.1:9092 (kcat -b 127.0.0.1:9092 -L)"
  echo "stop with: kill ${PIDS[*]}; scripts/vm-local.sh stop; scripts/kafka-local.sh stop"
fi
