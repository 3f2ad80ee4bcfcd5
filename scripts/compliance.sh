#!/usr/bin/env bash
# The official remote-write receiver compliance suite (prometheus/compliance,
# remotewrite/receiver) run against the gateway: remote write 1.0 and 2.0
# samples, histograms, exemplars, metadata, bad content types, encodings and
# bodies. The suite's module comes from the Go module proxy at a pinned
# version and its test binary is built once into the git-ignored cache.
#
#   scripts/compliance.sh        prints every test and a summary; exit 1 on a failure
#
# Needs a broker: KAFKA_BOOTSTRAP (default 127.0.0.1:${KAFKA_PORT:-9092}),
# e.g. from scripts/kafka-local.sh start. Uses target/debug/streamroute
# (built when missing) and a fresh ingress topic.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SUITE_MODULE="github.com/prometheus/compliance/remotewrite/receiver"
SUITE_VERSION="v0.0.0-20260806071727-67b8327a2e93"
GO_ROOT="$CACHE_DIR/go"
SUITE_BIN="$CACHE_DIR/compliance/rw-receiver-$SUITE_VERSION.test"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}"
LISTEN="127.0.0.1:${COMPLIANCE_PORT:-9231}"

go_bin() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "Go is missing (looked for go on PATH and /usr/local/go/bin/go)"; fi
}

build_suite() {
  [ -x "$SUITE_BIN" ] && return 0
  local go t0=$SECONDS src
  go=$(go_bin)
  export GOPATH="$GO_ROOT/path" GOMODCACHE="$GO_ROOT/mod" GOCACHE="$GO_ROOT/build" GOFLAGS="-modcacherw"
  log "building the remote-write receiver compliance suite $SUITE_VERSION (a few minutes, once)"
  src=$("$go" mod download -json "$SUITE_MODULE@$SUITE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || die "could not download $SUITE_MODULE@$SUITE_VERSION"
  mkdir -p "$(dirname "$SUITE_BIN")"
  (cd "$src" && CGO_ENABLED=0 "$go" test -c -o "$SUITE_BIN" .)
  log "built the compliance suite in $((SECONDS - t0)) s"
}

build_suite
[ -x target/debug/streamroute ] || cargo build --locked --bin streamroute
port_open "${LISTEN%:*}" "${LISTEN#*:}" && die "$LISTEN is in use (set COMPLIANCE_PORT)"

WORK=$(mktemp -d)
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

id="$(date +%s)$RANDOM"
mkdir -p "$WORK/topics"
printf 'name = "compliance.ingress.%s"\npartitions = 1\nreplication_factor = 1\n' "$id" >"$WORK/topics/ingress.toml"
cat >"$WORK/config.toml" <<TOML
[log]
level = "warn"
[kafka]
bootstrap_servers = "$BOOTSTRAP"
[topics]
ingress = "compliance.ingress.$id"
[gateway]
listen = "$LISTEN"
TOML
target/debug/streamroute -c "$WORK/config.toml" topics apply --dir "$WORK/topics" >/dev/null
target/debug/streamroute -c "$WORK/config.toml" gateway >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 60); do
  curl -fsS "http://$LISTEN/-/ready" >/dev/null 2>&1 && break
  kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/gateway.log"; die "the gateway exited"; }
  sleep 0.5
done

# The suite reads its receivers from a Prometheus config file.
printf 'remote_write:\n  - name: streamroute\n    url: http://%s/api/v1/write\n' "$LISTEN" >"$WORK/receivers.yml"
rc=0
(cd "$WORK" && PROMETHEUS_RW2_COMPLIANCE_CONFIG_FILE="$WORK/receivers.yml" "$SUITE_BIN" -test.v) \
  >"$WORK/suite.log" 2>&1 || rc=$?
grep -E '^\s*--- (FAIL|SKIP)' "$WORK/suite.log" || true
pass=$(grep -cE '^--- PASS' "$WORK/suite.log" || true)
fail=$(grep -cE '^--- FAIL' "$WORK/suite.log" || true)
sub_pass=$(grep -cE '^\s+--- PASS' "$WORK/suite.log" || true)
sub_fail=$(grep -cE '^\s+--- FAIL' "$WORK/suite.log" || true)
log "compliance suite $SUITE_VERSION: $pass tests passed, $fail failed ($sub_pass / $sub_fail cases)"
if [ "$rc" -ne 0 ]; then
  tail -50 "$WORK/suite.log"
  die "the remote-write receiver compliance suite failed"
fi
