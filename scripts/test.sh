#!/usr/bin/env bash
# Everything in one command, on a fresh machine: installs what is missing,
# builds, starts a real Kafka broker and VictoriaMetrics + vmagent, runs the
# unit and integration tests against them, lints, and stops what it started.
#
#   scripts/test.sh [extra cargo test args]
#
# KAFKA_BOOTSTRAP=host:port uses an existing cluster instead of starting one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

t0=$SECONDS
"$ROOT/scripts/setup.sh"
log "building"
cargo build --all-targets --locked

# Remember whether the caller brought a cluster: only then is it not ours to stop.
USER_KAFKA="${KAFKA_BOOTSTRAP:-}"
cleanup() {
  "$ROOT/scripts/vm-local.sh" stop || true
  KAFKA_BOOTSTRAP="$USER_KAFKA" "$ROOT/scripts/kafka-local.sh" stop || true
}
trap cleanup EXIT
"$ROOT/scripts/kafka-local.sh" start
"$ROOT/scripts/vm-local.sh" start
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}"
export VM_URL="http://127.0.0.1:${VM_PORT:-8428}"
export VMAGENT_URL="http://127.0.0.1:${VMAGENT_PORT:-8429}"
# vmagent and victoria-metrics v1.151.0 for the stream aggregation test.
eval "$("$ROOT/scripts/vm-modern.sh" env)"

log "checking the alerting rules (promtool from Debian's prometheus, setup.sh)"
(cd "$ROOT/deploy/alerts" && promtool check rules streamroute.rules.yml && promtool test rules streamroute.rules.test.yml)

log "running unit and integration tests against kafka at $KAFKA_BOOTSTRAP"
cargo test --locked "$@"

log "running the remote-write receiver compliance suite against the gateway"
"$ROOT/scripts/compliance.sh"

log "linting"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

log "all tests passed in $((SECONDS - t0)) s"
