#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft) for development and tests.
#
#   scripts/kafka-local.sh start|stop|kill|status
#
# kill sends SIGKILL, as a crash would (for fault tests); start after it
# recovers the broker's logs as after any crash.
#
# The jars come from Maven Central (scripts/kafka/pom.xml) into .cache/;
# the broker runs on the machine's Java 17 and listens on 127.0.0.1:$KAFKA_PORT
# (default 9092; its controller on KAFKA_PORT+1). When KAFKA_BOOTSTRAP is set,
# an existing cluster is used and this script starts nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT=$((KAFKA_PORT + 1))
LIBS="$CACHE_DIR/kafka-libs"
DATA="$RUN_DIR/kafka-$KAFKA_PORT"
PIDFILE="$RUN_DIR/kafka-$KAFKA_PORT.pid"
LOGFILE="$RUN_DIR/kafka-$KAFKA_PORT.log"
CONSOLE="$RUN_DIR/kafka-$KAFKA_PORT.console"
KAFKA_SECURITY="${KAFKA_SECURITY:-plaintext}"
TLS_DIR="$DATA/tls"
SASL_USER=streamroute
SASL_PASSWORD=streamroute-secret

resolve_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || apt_install maven
  log "resolving the Kafka broker jars from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" \
    || die "mvn could not resolve the Kafka jars (see the output above)"
  touch "$LIBS/.complete"
}

check_java() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  local v
  v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2}' | cut -d. -f1)
  [ "${v:-0}" -ge 17 ] || die "Kafka 4 needs Java 17 or newer, found '$v'"
}

# A throw-away CA and a broker certificate for 127.0.0.1, as PKCS#12.
make_certificates() {
  [ -f "$TLS_DIR/broker.p12" ] && return 0
  command -v openssl >/dev/null || apt_install openssl
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
      -subj "/CN=streamroute test CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem \
      -days 30 -extfile broker.ext 2>/dev/null
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -out broker.p12 \
      -passout pass:changeit
  ) || die "could not make the test certificates in $TLS_DIR"
}

# The client listener's lines of server.properties.
listener_properties() {
  if [ "$KAFKA_SECURITY" = sasl_ssl ]; then
    cat <<PROPS
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
PROPS
  else
    cat <<PROPS
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
PROPS
  fi
}

write_properties() {
  mkdir -p "$DATA/logs"
  [ "$KAFKA_SECURITY" = sasl_ssl ] && make_certificates
  cat > "$DATA/server.properties" <<PROPS
# Single node doing both KRaft roles; static voters keep it simple.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
$(listener_properties)
log.dirs=$DATA/logs
# One broker: internal topics must not ask for more replicas than exist,
# or consumer groups and transactions wait forever.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create groups all the time; do not wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# Topics are code (topics/): nothing appears by accident.
auto.create.topics.enable=false
num.partitions=1
PROPS
}

broker_answers() {
  if [ "$KAFKA_SECURITY" = sasl_ssl ]; then
    kcat -b "127.0.0.1:$KAFKA_PORT" -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN \
      -X sasl.username="$SASL_USER" -X sasl.password="$SASL_PASSWORD" \
      -X ssl.ca.location="$TLS_DIR/ca.pem" -L -m 3 >/dev/null 2>&1
  else
    kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 3 >/dev/null 2>&1
  fi
}

start() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    log "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP is set: using that cluster, starting nothing"
    return 0
  fi
  command -v kcat >/dev/null || apt_install kafkacat
  if pid_alive "$PIDFILE" && broker_answers; then
    log "kafka already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$PIDFILE"))"
    return 0
  fi
  if port_open 127.0.0.1 "$KAFKA_PORT"; then
    die "something else listens on 127.0.0.1:$KAFKA_PORT; stop it or set KAFKA_PORT"
  fi
  check_java
  resolve_jars
  write_properties
  local t0=$SECONDS
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    local id
    id=$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    local scram=()
    [ "$KAFKA_SECURITY" = sasl_ssl ] && scram=(--add-scram "SCRAM-SHA-512=[name=\"$SASL_USER\",password=\"$SASL_PASSWORD\"]")
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
      -Dkafka.logs.file="$LOGFILE" kafka.tools.StorageTool format \
      -t "$id" -c "$DATA/server.properties" "${scram[@]}" >"$CONSOLE" 2>&1 \
      || die "formatting the broker storage failed, see $CONSOLE and $LOGFILE"
    log "formatted broker storage in $DATA (cluster $id)"
  fi
  # setsid: the broker must outlive this script and not get the caller's signals.
  setsid java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -Dkafka.logs.file="$LOGFILE" \
    -cp "$LIBS/*" kafka.Kafka "$DATA/server.properties" >"$CONSOLE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 120); do
    if broker_answers; then
      log "kafka ready on 127.0.0.1:$KAFKA_PORT in $((SECONDS - t0)) s (log: $LOGFILE)"
      return 0
    fi
    pid_alive "$PIDFILE" || die "kafka exited during start-up, see $LOGFILE and $CONSOLE"
    sleep 0.5
  done
  die "kafka did not answer metadata requests within 60 s, see $LOGFILE"
}

stop() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    log "KAFKA_BOOTSTRAP is set: nothing of ours to stop"
    return 0
  fi
  stop_pidfile "$PIDFILE" kafka
  # A broker that lost its pid file must not keep the port.
  local stray
  stray=$(pgrep -f "kafka.Kafka $DATA/server.properties" || true)
  if [ -n "$stray" ]; then
    log "stopping stray kafka process(es) $stray"
    kill $stray 2>/dev/null || true
    sleep 3
    kill -9 $stray 2>/dev/null || true
  fi
}

crash() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    log "KAFKA_BOOTSTRAP is set: nothing of ours to kill"
    return 0
  fi
  local pids
  pids=$(pgrep -f "kafka.Kafka $DATA/server.properties" || true)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  for _ in $(seq 1 50); do
    pgrep -f "kafka.Kafka $DATA/server.properties" >/dev/null || break
    sleep 0.1
  done
  rm -f "$PIDFILE"
  log "kafka on 127.0.0.1:$KAFKA_PORT killed (SIGKILL)"
}

status() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    kcat -b "$KAFKA_BOOTSTRAP" -L -m 3 >/dev/null 2>&1 \
      && { echo "kafka at $KAFKA_BOOTSTRAP answers"; return 0; } \
      || { echo "kafka at $KAFKA_BOOTSTRAP does not answer"; return 1; }
  fi
  if pid_alive "$PIDFILE" && broker_answers; then
    echo "kafka running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$PIDFILE"), log $LOGFILE)"
  else
    echo "kafka not running on 127.0.0.1:$KAFKA_PORT"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill) crash ;;
  status) status ;;
  *) echo "usage: $0 start|stop|kill|status" >&2; exit 2 ;;
esac
