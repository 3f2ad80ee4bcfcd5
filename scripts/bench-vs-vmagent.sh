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
#   sr-ids     the same, its route writing record_format = "series_ids"
# Every contender writes to one blackhole receiver (answers 204, counts
# samples per contender). Payload forms: `prost` (as prost/Prometheus write
# them) and `explicit` (every zero value written out). Prints samples in and
# out, CPU µs per ingested sample (utime+stime from /proc) and the ratios to
# vmagent v1.151.0. The load and measuring: examples/bench_vs_vmagent.rs.
#
#   scripts/bench-vs-vmagent.sh [rounds] [rate] [seconds]
#   BENCH_ALLOCATORS=1 scripts/bench-vs-vmagent.sh   also streamroute with the system malloc, mimalloc, jemalloc
#   BENCH_PERF=perf.data scripts/bench-vs-vmagent.sh  and a perf profile of streamroute
#   BENCH_NO_CACHE=1 scripts/bench-vs-vmagent.sh     also sr-nocache: streamroute with router.relabel_cache_bytes = 0
#   BENCH_SPLIT=1 scripts/bench-vs-vmagent.sh        also sr-split: the same config as three processes
#                                                    (gateway, router, egress), each one's CPU printed
#   BENCH_FORMS=prost, BENCH_SKIP_OLD=1 (no vmagent 1.79 turns), BENCH_KAFKA_VARIANTS, BENCH_BINARIES: see below
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
VMAGENT_MODERN_BIN="${VMAGENT_MODERN_BIN:-$CACHE_DIR/go/bin/vmagent}"
VMAGENT_OLD_BIN="${VMAGENT_OLD_BIN:-/usr/bin/vmagent}"

[ -n "${KAFKA_BOOTSTRAP:-}" ] && die "measures the local broker's CPU; unset KAFKA_BOOTSTRAP"
for addr in "$HOLE" "$VM151" "$VM179" "127.0.0.1:$((BASE_PORT + 3))"; do
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

# The five rules, in the YAML both vmagent and streamroute read (the same
# file the router bench and integration/allocations.rs read).
cp "$ROOT/benches/five_rules.yml" "$WORK/rules.yml"

write_topic() {
  printf 'name = "%s"\npartitions = %d\nreplication_factor = 1\n[config]\n"compression.type" = "producer"\n"max.message.bytes" = "34603008"\n' \
    "$1" "$2" > "$WORK/topics/$1.toml"
}
# sr_config NAME LISTEN [PROPS]: a `streamroute run` config of its own
# (topics, group, egress state) writing to the blackhole under /NAME, with
# PROPS (key=value,...) as [kafka.properties].
sr_config() {
  local name=$1 listen=$2 props=${3:-} ingress="bench.vs.$1.ingress.$id" tasks="bench.vs.$1.tasks.$id" \
    dead="bench.vs.$1.dead-letter.$id"
  write_topic "$ingress" 4
  write_topic "$tasks" 4
  write_topic "$dead" 1
  cat > "$WORK/$name.toml" <<TOML
[log]
level = "warn"
[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
[kafka.properties]
$(printf '%s' "$props" | tr ',' '\n' | grep -v '^router\.' | sed -n 's/^\([^=/]*\)=\(.*\)$/"\1" = "\2"/p')
$(printf '%s' "$props" | tr ',' '\n' | sed -n 's/^\([a-z]*\)\/\([^=]*\)=\(.*\)$/[kafka.role_properties.\1]\n"\2" = "\3"/p')
[topics]
ingress = "$ingress"
dead_letter = "$dead"
[run]
roles = ["gateway", "router", "egress"]
listen = "$listen"
[router]
group_id = "bench-vs-$name-$id"
$(printf '%s' "$props" | tr ',' '\n' | sed -n 's/^router\.\([^=]*\)=\(.*\)$/\1 = \2/p')
${ROUTER_EXTRA[$name]:-}
[[router.routes]]
name = "bench"
topic = "$tasks"
task_count = 64
relabel_file = "$WORK/rules.yml"
${ROUTE_EXTRA[$name]:-}
[egress]
topic = "$tasks"
partitions = "all"
target = "http://$HOLE/$name/api/v1/write"
state_dir = "$WORK/$name-egress-state"
TOML
}
# The streamroute contenders: NAME=BINARY[=PROPS]. With BENCH_ALLOCATORS=1,
# the same code with the system's malloc, mimalloc and jemalloc
# (examples/alloc_*.rs). BENCH_KAFKA_VARIANTS="name:key=value,key=value;..."
# adds one contender per variant with those librdkafka properties (every
# client of the process: gateway and router producers, router and egress
# consumers), e.g. "linger50:linger.ms=50"; ROLE/key=value sets it for that
# role's clients only (kafka.role_properties), e.g.
# "in-none:gateway/compression.type=none"; router.key=VALUE is a [router]
# setting, VALUE in TOML, e.g. 'commit1s:router.commit_interval="1s"'. A
# variant named ids-* also writes series ids, as sr-ids does.
# sr-ids: the same with the route's record_format = "series_ids" (labels
# once per series_refresh, then series ids: the task-topic storage figure).
# Each series gets a sample every 0.5 s here (20,000 series at 40,000/s),
# so series_refresh = 10s writes its labels once per 20 samples, as the
# default 5m does for a 15 s scrape interval.
SR_CONTENDERS=("streamroute=$BIN" "sr-ids=$BIN")
declare -A ROUTE_EXTRA=([sr-ids]='record_format = "series_ids"')
declare -A ROUTER_EXTRA=([sr-ids]='series_refresh = "10s"' [sr-nocache]='relabel_cache_bytes = 0')
# BENCH_NO_CACHE=1: also streamroute relabeling every series anew (each of
# the 20,000 series here is seen 30 times in 15 s; the cache holds them all).
[ "${BENCH_NO_CACHE:-0}" = 1 ] && SR_CONTENDERS+=("sr-nocache=$BIN")
# BENCH_SPLIT=1: also streamroute as `streamroute gateway`, `router` and
# `egress`, one process each (the config of `streamroute`), so that the CPU
# of each role is measured on its own: its row reads gateway + router +
# egress + broker, and its summary's "own" is their sum.
[ "${BENCH_SPLIT:-0}" = 1 ] && SR_CONTENDERS+=("sr-split=$BIN")
IFS=';' read -r -a variants <<<"${BENCH_KAFKA_VARIANTS:-}"
for v in "${variants[@]}"; do
  [ -n "$v" ] || continue
  SR_CONTENDERS+=("${v%%:*}=$BIN=${v#*:}")
  # A variant named ids-*: with sr-ids' series ids.
  case "${v%%:*}" in
    ids-*)
      ROUTE_EXTRA[${v%%:*}]="${ROUTE_EXTRA[sr-ids]}"
      ROUTER_EXTRA[${v%%:*}]="${ROUTER_EXTRA[sr-ids]}"
      ;;
  esac
done
# BENCH_BINARIES="name=/path/to/streamroute ...": other builds of
# streamroute beside this one (the code before a change, say).
for b in ${BENCH_BINARIES:-}; do
  SR_CONTENDERS+=("$b")
done
if [ "${BENCH_ALLOCATORS:-0}" = 1 ]; then
  cargo build --release --quiet --example alloc_system --example alloc_mimalloc --example alloc_jemalloc
  for a in system mimalloc jemalloc; do
    SR_CONTENDERS+=("sr-$a=$ROOT/target/release/examples/alloc_$a")
  done
fi
port=$((BASE_PORT + 3))
for c in "${SR_CONTENDERS[@]}"; do
  rest=${c#*=}
  props=""; [[ "$rest" == *=* ]] && props=${rest#*=}
  sr_config "${c%%=*}" "127.0.0.1:$port" "$props"
  if [ "${c%%=*}" = sr-split ]; then
    # Each role alone listens on its own address; the gateway's is the
    # contender's write URL.
    printf '[gateway]\nlisten = "127.0.0.1:%d"\n' "$port" >> "$WORK/sr-split.toml"
    sed -i "s/^\[router\]$/[router]\nlisten = \"127.0.0.1:$((port + 100))\"/; s/^\[egress\]$/[egress]\nlisten = \"127.0.0.1:$((port + 200))\"/" "$WORK/sr-split.toml"
  fi
  port=$((port + 1))
done
"$BIN" -c "$WORK/streamroute.toml" topics apply --dir "$WORK/topics" >/dev/null

# Stop only what this script started.
PIDS=()
SR_READY=()
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
port=$((BASE_PORT + 3))
SR_ARGS=()
for c in "${SR_CONTENDERS[@]}"; do
  name=${c%%=*} bin=${c#*=}
  bin=${bin%%=*}
  if [ "$name" = sr-split ]; then
    split=()
    for role in gateway router egress; do
      "$bin" -c "$WORK/$name.toml" "$role" >"$WORK/$name-$role.log" 2>&1 &
      PIDS+=($!); split+=($!)
    done
    SR_ARGS+=(--contender "$name=http://127.0.0.1:$port/api/v1/write=$(IFS=+; echo "${split[*]}"),$BROKER_PID")
    SR_READY+=("$name-gateway http://127.0.0.1:$port/-/ready ${split[0]} $WORK/$name-gateway.log")
    SR_READY+=("$name-router http://127.0.0.1:$((port + 100))/-/ready ${split[1]} $WORK/$name-router.log")
    SR_READY+=("$name-egress http://127.0.0.1:$((port + 200))/-/ready ${split[2]} $WORK/$name-egress.log")
    port=$((port + 1))
    continue
  fi
  "$bin" -c "$WORK/$name.toml" run >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  SR_ARGS+=(--contender "$name=http://127.0.0.1:$port/api/v1/write=$!,$BROKER_PID")
  SR_READY+=("$name http://127.0.0.1:$port/-/ready $! $WORK/$name.log")
  port=$((port + 1))
done

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
VM179_ARGS=(--contender "vm179=http://$VM179/api/v1/write=$VM179_PID")
# BENCH_SKIP_OLD=1: no vmagent 1.79 turns (it still runs, idle).
[ "${BENCH_SKIP_OLD:-0}" = 1 ] && VM179_ARGS=()
for r in "${SR_READY[@]}"; do
  # shellcheck disable=SC2086 # four words
  wait_ready $r
done

log "contenders: $("$VMAGENT_MODERN_BIN" -version 2>&1 | head -1), $VMAGENT_OLD_BIN ($(dpkg-query -W -f="\${Version}" victoria-metrics 2>/dev/null || echo "version unknown")), streamroute"
echo "load before: $(uptime)"
# BENCH_PERF=FILE: a perf profile (call graphs) of the first streamroute
# contender over the whole run; it is busy only during its own turns.
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -F 499 ${BENCH_PERF_CALLGRAPH:--g} -o "$BENCH_PERF" -p "$(echo "${SR_READY[0]}" | cut -d' ' -f3)" >/dev/null 2>&1 &
  PERF_PID=$!
fi
rc=0
"$TOOL" run --blackhole "http://$HOLE" --rate "$RATE" --seconds "$SECONDS_PER_RUN" \
  --rounds "$ROUNDS" --clk-tck "$(getconf CLK_TCK)" --forms "${BENCH_FORMS:-prost,explicit}" \
  --contender "vm151=http://$VM151/api/v1/write=$VM151_PID" \
  "${VM179_ARGS[@]}" \
  "${SR_ARGS[@]}" \
  || rc=$?
echo "load after:  $(uptime)"
if [ -n "${PERF_PID:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; fi
echo "(streamroute's \"others\" is the Kafka broker, which other work on this machine may also use)"
# Task-topic storage on the broker per sample it holds (every sample the
# blackhole got from that contender went through its task topic once).
LOGS="$RUN_DIR/kafka-$KAFKA_PORT/logs"
stats=$(curl -fsS "http://$HOLE/stats" || true)
for c in "${SR_CONTENDERS[@]}"; do
  name=${c%%=*}
  samples=$(printf '%s\n' "$stats" | sed -n "s/.*\"path\":\"$name\",\"samples\":\([0-9]*\).*/\1/p")
  bytes=$(cat "$LOGS/bench.vs.$name.tasks.$id"-*/*.log 2>/dev/null | wc -c)
  ingress=$(cat "$LOGS/bench.vs.$name.ingress.$id"-*/*.log 2>/dev/null | wc -c)
  awk -v n="$name" -v s="${samples:-0}" -v b="$bytes" -v i="$ingress" 'BEGIN { if (s > 0)
    printf "%-14s task topic %.2f bytes/sample out, ingress topic %.2f bytes/sample in (%d out; in = out x 4/3, the rules keep 3 of 4)\n", n, b / s, i / (s * 4 / 3), s }'
done
cleanup
PIDS=()
[ "$rc" -eq 0 ] && rm -rf "$WORK" || log "kept $WORK for inspection"
exit "$rc"
