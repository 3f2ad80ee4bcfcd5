#!/usr/bin/env bash
# Bytes per sample the ingress topic stores, and the producer's CPU, for
# each way of storing a payload: decoded protobuf or the snappy body as
# received, with each Kafka batch compression.
#
#   scripts/bench-ingress.sh [series] [samples-per-series]
#
# Needs the local broker (scripts/kafka-local.sh), whose log directory it
# reads to measure what Kafka really keeps on disk.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SERIES=${1:-20000}
SAMPLES=${2:-10}
bench_local_broker
export STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
total=$((SERIES * SAMPLES))
printf '%-10s %-8s %14s %10s %12s\n' value kafka bytes/sample cpu_s samples/s
mkdir -p "$RUN_DIR/bench-topics"
for variant in identity:zstd identity:lz4 identity:none snappy:none snappy:zstd zstd:none; do
  value=${variant%%:*} compression=${variant##*:}
  topic="bench.ingress.$value.$compression.$RANDOM$RANDOM"
  printf 'name = "%s"\npartitions = 1\nreplication_factor = 1\n[config]\n"compression.type" = "producer"\n"max.message.bytes" = "34603008"\n' \
    "$topic" > "$RUN_DIR/bench-topics/t.toml"
  printf '[kafka.properties]\n"compression.type" = "%s"\n' "$compression" > "$RUN_DIR/bench-config.toml"
  "$BIN" -c "$RUN_DIR/bench-config.toml" topics apply --dir "$RUN_DIR/bench-topics" >/dev/null
  TIMEFORMAT='%R %U %S'
  times=$( { time "$BIN" -c "$RUN_DIR/bench-config.toml" produce --generate --series "$SERIES" \
      --samples-per-series "$SAMPLES" --topic "$topic" --value-encoding "$value" \
      >/dev/null 2>"$RUN_DIR/bench-produce.log"; } 2>&1 )
  read -r wall user sys <<<"$times"
  sleep 1
  bytes=$(cat "$LOGS/$topic"-*/*.log | wc -c)
  awk -v v="$value" -v c="$compression" -v b="$bytes" -v n="$total" -v w="$wall" -v u="$user" -v s="$sys" \
    'BEGIN { printf "%-10s %-8s %14.1f %10.2f %12.0f\n", v, c, b / n, u + s, n / w }'
done
rm -rf "$RUN_DIR/bench-topics" "$RUN_DIR/bench-config.toml"
