#!/usr/bin/env bash
# VictoriaMetrics single-node (127.0.0.1:8428) and vmagent (127.0.0.1:8429)
# forwarding to it, from Debian's victoria-metrics package.
#
#   scripts/vm-local.sh start|stop|status
#
# VM_PORT and VMAGENT_PORT override the ports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VM_PORT="${VM_PORT:-8428}"
VMAGENT_PORT="${VMAGENT_PORT:-8429}"
VM_DATA="$RUN_DIR/victoria-metrics-$VM_PORT"
VMAGENT_DATA="$RUN_DIR/vmagent-$VMAGENT_PORT"

ready() { curl -fsS "http://127.0.0.1:$1/health" >/dev/null 2>&1; }

wait_ready() {
  local name=$1 port=$2 logfile=$3 pidfile=$4
  for _ in $(seq 1 60); do
    ready "$port" && { log "$name ready on 127.0.0.1:$port"; return 0; }
    pid_alive "$pidfile" || die "$name exited during start-up, see $logfile"
    sleep 0.5
  done
  die "$name did not become healthy within 30 s, see $logfile"
}

start() {
  command -v victoria-metrics >/dev/null && command -v vmagent >/dev/null \
    || apt_install victoria-metrics
  command -v curl >/dev/null || apt_install curl
  local pid="$RUN_DIR/victoria-metrics-$VM_PORT.pid" lf="$RUN_DIR/victoria-metrics-$VM_PORT.log"
  if pid_alive "$pid" && ready "$VM_PORT"; then
    log "victoria-metrics already running on 127.0.0.1:$VM_PORT"
  else
    port_open 127.0.0.1 "$VM_PORT" && die "something else listens on 127.0.0.1:$VM_PORT"
    mkdir -p "$VM_DATA"
    # No query latency offset, so tests see samples at once; tests and demos
    # pile up many series, so lift the per-query series limit.
    setsid victoria-metrics -httpListenAddr="127.0.0.1:$VM_PORT" \
      -storageDataPath="$VM_DATA" -retentionPeriod=100y \
      -search.latencyOffset=0s -dedup.minScrapeInterval=0 \
      -search.maxUniqueTimeseries=10000000 \
      >"$lf" 2>&1 </dev/null &
    echo $! >"$pid"
    wait_ready victoria-metrics "$VM_PORT" "$lf" "$pid"
  fi
  pid="$RUN_DIR/vmagent-$VMAGENT_PORT.pid" lf="$RUN_DIR/vmagent-$VMAGENT_PORT.log"
  if pid_alive "$pid" && ready "$VMAGENT_PORT"; then
    log "vmagent already running on 127.0.0.1:$VMAGENT_PORT"
  else
    port_open 127.0.0.1 "$VMAGENT_PORT" && die "something else listens on 127.0.0.1:$VMAGENT_PORT"
    mkdir -p "$VMAGENT_DATA"
    # A short flush interval keeps tests quick; the on-disk queue keeps
    # data when VictoriaMetrics is away.
    setsid vmagent -httpListenAddr="127.0.0.1:$VMAGENT_PORT" \
      -remoteWrite.url="http://127.0.0.1:$VM_PORT/api/v1/write" \
      -remoteWrite.tmpDataPath="$VMAGENT_DATA" -remoteWrite.flushInterval=200ms \
      >"$lf" 2>&1 </dev/null &
    echo $! >"$pid"
    wait_ready vmagent "$VMAGENT_PORT" "$lf" "$pid"
  fi
}

stop() {
  stop_pidfile "$RUN_DIR/vmagent-$VMAGENT_PORT.pid" vmagent
  stop_pidfile "$RUN_DIR/victoria-metrics-$VM_PORT.pid" victoria-metrics
}

status() {
  local rc=0
  if ready "$VM_PORT"; then echo "victoria-metrics running on 127.0.0.1:$VM_PORT"
  else echo "victoria-metrics not running on 127.0.0.1:$VM_PORT"; rc=1; fi
  if ready "$VMAGENT_PORT"; then echo "vmagent running on 127.0.0.1:$VMAGENT_PORT"
  else echo "vmagent not running on 127.0.0.1:$VMAGENT_PORT"; rc=1; fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
