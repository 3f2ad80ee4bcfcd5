# Shared helpers for the scripts in this folder. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Caches (Maven jars, broker data, logs) live under .cache/, which git ignores.
CACHE_DIR="${SR_CACHE_DIR:-$ROOT/.cache}"
RUN_DIR="${SR_RUN_DIR:-$ROOT/.run}"
mkdir -p "$CACHE_DIR" "$RUN_DIR"

# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# apt_install PKG...: installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pid_alive FILE: true when FILE names a running process.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile FILE NAME: TERM, wait up to 20 s, then KILL; removes FILE.
stop_pidfile() {
  local file=$1 name=$2 pid
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; log "$name stopped"; return 0; }
    sleep 0.5
  done
  log "$name did not stop in 20 s, killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

# bench_local_broker: for benchmarks that read the local broker's log
# directory. Starts the broker, builds release, and sets KAFKA_PORT, LOGS, BIN.
bench_local_broker() {
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  LOGS="$RUN_DIR/kafka-$KAFKA_PORT/logs"
  [ -n "${KAFKA_BOOTSTRAP:-}" ] && die "needs the local broker's log directory; unset KAFKA_BOOTSTRAP"
  "$ROOT/scripts/kafka-local.sh" start
  (cd "$ROOT" && cargo build --release --quiet)
  BIN="$ROOT/target/release/streamroute"
}
