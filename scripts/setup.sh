#!/usr/bin/env bash
# Installs what building and testing streamroute needs on a fresh Debian
# machine: the C toolchain for librdkafka, Java and Maven for the Kafka
# broker, VictoriaMetrics/vmagent, Prometheus and kcat, and builds vmagent and
# victoria-metrics v1.151.0 (stream aggregation) with Go. Safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_install build-essential cmake pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev \
  curl maven victoria-metrics prometheus kafkacat
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v cargo >/dev/null || die "cargo is missing: install Rust (rustup) first"
"$ROOT/scripts/vm-modern.sh" build
