#!/usr/bin/env bash
# streamroute and vmagent side by side on the same remote-write traffic:
# the same payloads (2,000 series of 12-15 labels per request, snappy), the
# same five relabel rules, the same load for the same time, then drained,
# one contender at a time (the order rotates every round), all in one run:
#   vm151      vmagent v1.151.0 (scripts/vm-modern.sh build), remote write in
#              -> -remoteWrite.relabelConfig -> remote write out
#   vm179      Debian's vmagent 1.79 (/usr/bin/vmagent), the same
#   streamroute `streamroute run` (gateway -> ingress topic -> router with the
#              rules as its route's relabel_file -> task topic -> egress),
#              charged its own CPU and, separately, the Kafka broker's
# Every contender writes to one blackhole receiver (answers 204, counts
# samples per contender). Payload forms: `prost` (as prost/Prometheus write
# them) and `explicit` (every zero value written out). Prints samples in and
# out, CPU µs per ingested sample (utime+stime from /proc) and the ratios to
# vmagent v1.151.0. The load and measuring: examples/bench_vs_vmagent.rs.
#
#   scripts/bench-vs-vmagent.sh [rounds] [rate] [seconds]
#
# Defaults: 1 round, 40,000 samples/s, 15 s per contender and form. Uses the
# local broker (scripts/kafka-local.sh), fresh topics; KAFKA_BOOTSTRAP is
# refused (the broker's CPU is measured). VMAGENT_MODERN_BIN and VMAGENT_OLD_BIN
# override the vmagent binaries. The machine is shared: read the ratios of one
# run, not absolute figures across runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ROUNDS=${1:-1}
RATE=${2:-40000}
SECONDS_PER_RUN=${3:-15}
KAFKA_PORT="${KAFKA_PORT:-9092}"
BASE_PORT="${BENCH_VS_PORT:-9241}"
HOLE="127.0.0.1:$BASE_PORT"
VM151="127.0.0.1:$((BASE_PORT + 1))"
VM179="127.0.0.1:$((BASE_PORT + 2))"
SR="127.0.0.1:$((BASE_PORT + 3))"
VMAGENT_MODERN_BIN="${VMAGENT_MODERN_BIN:-$CACHE_DIR/go/bin/vmagent}"
VMAGENT_OLD_BIN="${VMAGENT_OLD_BIN:-/usr/bin/vmagent}"

[ -n "${KAFKA_BOOTSTRAP:-}" ] && die "measures the local broker's CPU; unset KAFKA_BOOTSTRAP"
for addr in "$HOLE" "$VM151" "$VM179" "$SR"; do
  port_open "${addr%:*}" "${addr#*:}" && die "$addr is in use (set BENCH_VS_PORT)"
done
[ -x "$VMAGENT_MODERN_BIN" ] || scripts/vm-modern.sh build
[ -x "$VMAGENT_OLD_BIN" ] || die "$VMAGENT_OLD_BIN is missing (apt-get install victoria-metrics)"

scripts/kafka-local.sh start
cargo build --release --quiet --bin streamroute --example bench_vs_vmagent
BIN="$ROOT/target/release/streamroute"
TOOL="$ROOT/target/release/examples/bench_vs_vmagent"
BROKER_PID=$(cat "$RUN_DIR/kafka-$KAFKA_PORT.pid")

id="$(date +%s)$RANDOM"
WORK="$RUN_DIR/bench-vs-vmagent.$id"
mkdir -p "$WORK/topics"

# The five rules, in the YAML both vmagent and streamroute read.
cat > "$WORK/rules.yml" <<'YAML'
- action: drop
  source_labels: [__name__]
  regex: "go_.*|process_.*"
- action: replace
  source_labels: [instance]
  regex: "([^:]+):.*"
  target_label: host
  replacement: "$1"
- action: labeldrop
  regex: "tmp_.*"
- action: replace
  target_label: env
  replacement: prod
- action: replace
  source_labels: [namespace, pod]
  separator: "/"
  target_label: workload
YAML

INGRESS="bench.vs.ingress.$id" TASKS="bench.vs.tasks.$id" DEAD="bench.vs.dead-letter.$id"
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
listen = "$SR"
[router]
group_id = "bench-vs-$id"
[[router.routes]]
name = "bench"
topic = "$TASKS"
task_count = 64
relabel_file = "$WORK/rules.yml"
[egress]
topic = "$TASKS"
partitions = "all"
target = "http://$HOLE/streamroute/api/v1/write"
state_dir = "$WORK/egress-state"
TOML
"$BIN" -c "$WORK/config.toml" topics apply --dir "$WORK/topics" >/dev/null

# Stop only what this script started.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$TOOL" blackhole --listen "$HOLE" >"$WORK/blackhole.log" 2>&1 &
PIDS+=($!)
# Defaults otherwise, as a user would start them.
"$VMAGENT_MODERN_BIN" -httpListenAddr="$VM151" -remoteWrite.url="http://$HOLE/vm151/api/v1/write" \
  -remoteWrite.relabelConfig="$WORK/rules.yml" -remoteWrite.tmpDataPath="$WORK/vm151-data" \
  -loggerLevel=WARN >"$WORK/vm151.log" 2>&1 &
VM151_PID=$!; PIDS+=($VM151_PID)
"$VMAGENT_OLD_BIN" -httpListenAddr="$VM179" -remoteWrite.url="http://$HOLE/vm179/api/v1/write" \
  -remoteWrite.relabelConfig="$WORK/rules.yml" -remoteWrite.tmpDataPath="$WORK/vm179-data" \
  -loggerLevel=WARN >"$WORK/vm179.log" 2>&1 &
VM179_PID=$!; PIDS+=($VM179_PID)
"$BIN" -c "$WORK/config.toml" run >"$WORK/streamroute.log" 2>&1 &
SR_PID=$!; PIDS+=($SR_PID)

wait_ready() { # NAME URL PID LOG
  for _ in $(seq 1 120); do
    curl -fsS "$2" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || die "$1 exited, see $4"
    sleep 0.5
  done
  die "$1 not ready after 60 s, see $4"
}
wait_ready vm151 "http://$VM151/health" "$VM151_PID" "$WORK/vm151.log"
wait_ready vm179 "http://$VM179/health" "$VM179_PID" "$WORK/vm179.log"
wait_ready streamroute "http://$SR/-/ready" "$SR_PID" "$WORK/streamroute.log"

log "contenders: $("$VMAGENT_MODERN_BIN" -version 2>&1 | head -1), $VMAGENT_OLD_BIN ($(dpkg-query -W -f="\${Version}" victoria-metrics 2>/dev/null || echo "version unknown")), streamroute"
echo "load before: $(uptime)"
rc=0
"$TOOL" run --blackhole "http://$HOLE" --rate "$RATE" --seconds "$SECONDS_PER_RUN" \
  --rounds "$ROUNDS" --clk-tck "$(getconf CLK_TCK)" \
  --contender "vm151=http://$VM151/api/v1/write=$VM151_PID" \
  --contender "vm179=http://$VM179/api/v1/write=$VM179_PID" \
  --contender "streamroute=http://$SR/api/v1/write=$SR_PID,$BROKER_PID" \
  || rc=$?
echo "load after:  $(uptime)"
echo "(streamroute's \"others\" is the Kafka broker, which other work on this machine may also use)"
cleanup
PIDS=()
[ "$rc" -eq 0 ] && rm -rf "$WORK" || log "kept $WORK for inspection"
exit "$rc"
