#!/usr/bin/env bash
# vmagent and victoria-metrics v1.151.0, built from source with Go into the
# git-ignored cache: Debian's packages are 1.79, which has no stream
# aggregation. The integration test of distributed stream aggregation
# (integration/aggregation.rs) starts its own processes from these binaries.
#
#   scripts/vm-modern.sh build    builds once per machine (a few minutes)
#   scripts/vm-modern.sh env      prints the export of VMAGENT_MODERN_BIN and VM_MODERN_BIN
#
# GO overrides the Go binary (default: go on PATH, else /usr/local/go/bin/go).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VM_VERSION="v1.151.0"
MODULE="github.com/VictoriaMetrics/VictoriaMetrics"
GO_ROOT="$CACHE_DIR/go"
BIN_DIR="$GO_ROOT/bin"
VMAGENT_BIN="$BIN_DIR/vmagent"
VM_BIN="$BIN_DIR/victoria-metrics"

go_bin() {
  if [ -n "${GO:-}" ]; then echo "$GO"
  elif command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "Go is missing (looked for go on PATH and /usr/local/go/bin/go)"; fi
}

# has_version BIN: true when BIN exists and reports $VM_VERSION.
has_version() {
  [ -x "$1" ] && "$1" -version 2>/dev/null | grep -q -- "-$VM_VERSION"
}

build() {
  if has_version "$VMAGENT_BIN" && has_version "$VM_BIN"; then
    log "vmagent and victoria-metrics $VM_VERSION already built in $BIN_DIR"
    return 0
  fi
  local go t0=$SECONDS
  go=$(go_bin)
  mkdir -p "$BIN_DIR"
  log "building vmagent and victoria-metrics $VM_VERSION with $("$go" version) (a few minutes)"
  # Everything Go writes stays under the cache (module cache writable, so
  # rm -rf works); the machine's Go builds it, never a downloaded
  # toolchain; the binaries carry the release version for -version.
  local app
  for app in vmagent victoria-metrics; do
    GOPATH="$GO_ROOT/path" GOBIN="$BIN_DIR" GOMODCACHE="$GO_ROOT/mod" \
      GOCACHE="$GO_ROOT/build" GOFLAGS="-modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0 \
      "$go" install -ldflags="-X $MODULE/lib/buildinfo.Version=$app-$VM_VERSION" \
      "$MODULE/app/$app@$VM_VERSION"
  done
  has_version "$VMAGENT_BIN" || die "$VMAGENT_BIN does not report $VM_VERSION"
  has_version "$VM_BIN" || die "$VM_BIN does not report $VM_VERSION"
  log "built vmagent and victoria-metrics $VM_VERSION in $((SECONDS - t0)) s"
}

case "${1:-}" in
  build) build ;;
  env) printf 'export VMAGENT_MODERN_BIN=%q VM_MODERN_BIN=%q\n' "$VMAGENT_BIN" "$VM_BIN" ;;
  *) echo "usage: $0 build|env" >&2; exit 2 ;;
esac
