#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Local Apache Kafka (KRaft) for torchkafka development, without Docker.
#
# The broker runs from jars that Maven fetches once into a cache outside the
# repository; all run state (config, data, logs, pid files, cluster id) lives
# under the repository's .run/ directory.
#
# Run `deploy/local/kafka.sh --help` for usage.

set -euo pipefail

# The one place where the Kafka version is pinned (kafka/pom.xml gets it from
# here via -Dkafka.version; docker-compose.yml names the matching image tag).
readonly KAFKA_VERSION="4.1.1"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly PROG="deploy/local/kafka.sh"
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=lib/tls.sh
. "$SCRIPT_DIR/lib/tls.sh"
readonly ASSETS_DIR="$SCRIPT_DIR/kafka"
readonly LOG4J_CONFIG="$ASSETS_DIR/log4j2.properties"

CACHE_DIR="$(absolute_path "${TORCHKAFKA_CACHE:-$HOME/.cache/torchkafka}")/kafka-$KAFKA_VERSION"
readonly CACHE_DIR
readonly LIBS_DIR="$CACHE_DIR/libs"
# Written inside the fetch temp dir just before it is renamed to libs/: a libs/
# directory without it is never used.
readonly STAMP_FILE=".torchkafka-complete"

RUN_DIR="$(absolute_path "${TORCHKAFKA_RUN_DIR:-$REPO_ROOT/.run}")"
readonly RUN_DIR
readonly SINGLE_DIR="$RUN_DIR/kafka-single"
readonly CLUSTER_DIR="$RUN_DIR/kafka-cluster"

readonly KAFKA_PORT="${KAFKA_PORT:-9092}"
readonly CLUSTER_PORT_BASE="${KAFKA_CLUSTER_PORT_BASE:-9192}"
readonly CLUSTER_SIZE=3
readonly START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
readonly STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
readonly HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
# Startup-oriented defaults for a small dev broker; see --help.
readonly JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"
readonly MIN_JAVA_MAJOR=17

JAVA="java"
# Readiness probes ask for metadata with kcat; where it is missing, with
# confluent-kafka under $PYTHON (KCAT empty): see require_kcat.
KCAT="kcat"
readonly PYTHON="${TORCHKAFKA_PYTHON:-python3}"

# Filled in by select_mode.
MODE=""
MODE_DIR=""
NODE_DIRS=()
NODE_IDS=()
BROKER_PORTS=()
CONTROLLER_PORTS=()
# The single node's secured listeners (none in cluster mode).
SASL_PORT=""
TLS_PORT=""

# Node indexes whose JVM this invocation launched (stopped again on failure/^C).
LAUNCHED=()
readonly ABORT_GRACE=5
STDERR_FD=2

usage() {
  cat <<EOF
Usage: $PROG COMMAND [ARGS]

Run a local Apache Kafka $KAFKA_VERSION (KRaft, no ZooKeeper, no Docker).

Commands:
  fetch                      Download the broker and tool jars with Maven (no-op when cached).
  start [single|cluster]     Start the broker(s) and wait until they answer (default: single).
  stop [single|cluster|all] [--clean]
                             Stop the broker(s) (default: single). --clean also
                             deletes their data, logs and config (fresh start next time).
  status [single|cluster]    Show whether the broker(s) run and answer (default: single).
                             Exit 0: all answer; 1: running but not all answer; 3: stopped.
  kill [single|cluster] [NODE]
                             SIGKILL the broker(s), a crash for fault tests (cluster: node
                             NODE, 1-3, or all of them). \`start\` starts the nodes that are
                             not running again, with their data.
  consumer-groups ARGS...    Kafka's kafka-consumer-groups tool from the cached jars, e.g.
                             consumer-groups --bootstrap-server 127.0.0.1:9192 --describe --group G
  -h, --help                 Show this help.

Modes:
  single   One combined broker+controller node.
           Broker 127.0.0.1:\$KAFKA_PORT (default 9092), controller on KAFKA_PORT+1,
           SASL_PLAINTEXT (SCRAM-SHA-256/512) on KAFKA_PORT+2, SSL on KAFKA_PORT+3
           (certificates made with openssl at first start; clients trust
           kafka-single/tls/ca.pem). SCRAM users are added through the admin API.
           Internal topics replication factor 1.
  cluster  Three combined nodes (ids 1-3).
           Brokers 127.0.0.1:BASE, BASE+1, BASE+2; controllers BASE+100..BASE+102,
           where BASE is \$KAFKA_CLUSTER_PORT_BASE (default 9192: brokers 9192-9194,
           controllers 9292-9294). Replication factor 3, min.insync.replicas 2.

Environment:
  TORCHKAFKA_CACHE       Jar cache root (default ~/.cache/torchkafka); jars go to
                         \$TORCHKAFKA_CACHE/kafka-$KAFKA_VERSION/libs.
  TORCHKAFKA_RUN_DIR     Run state root (default <repo>/.run); uses kafka-single/
                         and kafka-cluster/node{1,2,3}/ below it.
  KAFKA_PORT             Single-node broker port (default 9092).
  KAFKA_CLUSTER_PORT_BASE  Cluster port base (default 9192).
  KAFKA_START_TIMEOUT    Seconds to wait for the broker(s) to answer (default 60).
  KAFKA_STOP_TIMEOUT     Seconds to wait after SIGTERM before SIGKILL (default 30).
  KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx512m").
  KAFKA_JVM_OPTS         Other JVM flags (default "-XX:+UseSerialGC
                         -XX:TieredStopAtLevel=1 -Djava.awt.headless=true").
  JAVA_HOME              If set, \$JAVA_HOME/bin/java is used instead of java on PATH.
  TORCHKAFKA_PYTHON      Python whose confluent-kafka answers the readiness probes
                         when kcat is not installed (default python3).

Requires java >= $MIN_JAVA_MAJOR, kcat (or confluent-kafka in \$TORCHKAFKA_PYTHON),
and (for fetch) mvn; see deploy/local/install-system-deps.sh.
EOF
}

# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------

require_java() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif [[ -n ${JAVA_HOME:-} ]]; then
    warn "JAVA_HOME=$JAVA_HOME has no bin/java; using java from PATH"
  fi
  if [[ $JAVA == java ]] && ! command -v java >/dev/null 2>&1; then
    missing_tool java openjdk-17-jre-headless
  fi
  local major
  major="$(java_major "$JAVA")" || die 2 "could not determine the version of '$JAVA' ('$JAVA -version' output is unexpected)"
  if ((major < MIN_JAVA_MAJOR)); then
    die 2 "Java $MIN_JAVA_MAJOR or newer is required, '$JAVA' is Java $major. Install it with: sudo apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"
  fi
}

require_mvn() {
  command -v mvn >/dev/null 2>&1 || missing_tool mvn maven
}

require_kcat() {
  if command -v kcat >/dev/null 2>&1; then
    KCAT="kcat"
  elif command -v kafkacat >/dev/null 2>&1; then
    KCAT="kafkacat" # the package's old name on some distributions
  elif "$PYTHON" -c 'import confluent_kafka' >/dev/null 2>&1; then
    KCAT="" # e.g. a GPU machine with the Python client but no kcat (bench/gpu_check.sh)
  else
    missing_tool kcat kcat
  fi
}

# ---------------------------------------------------------------------------
# Jar cache
# ---------------------------------------------------------------------------

# The broker's jars are there (start needs no more).
cache_ready() { [[ -f $LIBS_DIR/$STAMP_FILE ]]; }
# ... and the command-line tools' (consumer-groups); an older cache lacks them.
readonly TOOLS_JAR="kafka-tools-$KAFKA_VERSION.jar"
cache_complete() { cache_ready && [[ -f $LIBS_DIR/$TOOLS_JAR ]]; }

# Removes temp dirs of fetches that were killed long ago (not a concurrent one).
clean_stale_fetches() {
  [[ -d $CACHE_DIR ]] || return 0
  find "$CACHE_DIR" -mindepth 1 -maxdepth 1 -type d \
    \( -name 'libs.tmp.*' -o -name 'libs.old.*' \) -mmin +60 \
    -exec rm -rf {} + 2>/dev/null || true
}

# Runs Maven to copy the broker's runtime classpath into $1.
mvn_copy_libs() {
  local dest=$1 work
  work="$(mktemp -d "${TMPDIR:-/tmp}/torchkafka-mvn.XXXXXX")"
  # Run from a scratch copy so Maven never writes into the repository.
  cp "$ASSETS_DIR/pom.xml" "$work/pom.xml"
  # Output is kept for errors only (Debian's Maven also emits stray colour
  # resets even with -B).
  if ! (cd "$work" && mvn -q -B --no-transfer-progress -Dstyle.color=never \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$dest" -DincludeScope=runtime) \
    >"$work/mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" >&2
    rm -rf "$work"
    return 1
  fi
  rm -rf "$work"
}

cmd_fetch() {
  if cache_complete; then
    log "Kafka $KAFKA_VERSION jars already cached in $LIBS_DIR"
    return 0
  fi
  require_java
  require_mvn
  mkdir -p "$CACHE_DIR"
  clean_stale_fetches
  local tmp started jars
  tmp="$(mktemp -d "$CACHE_DIR/libs.tmp.XXXXXX")"
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf -- '$tmp'" EXIT
  started="$(now_ms)"
  log "Fetching Kafka $KAFKA_VERSION jars with Maven into $LIBS_DIR ..."
  if ! mvn_copy_libs "$tmp"; then
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka $KAFKA_VERSION jars (see the output above; is Maven Central reachable?)"
  fi
  local jar
  for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" "$TOOLS_JAR"; do
    if [[ ! -f $tmp/$jar ]]; then
      rm -rf "$tmp"
      die "Maven finished but $jar is missing from the result"
    fi
  done
  jars="$(find "$tmp" -maxdepth 1 -name '*.jar' | wc -l)"
  printf 'kafka_version=%s\njars=%s\nfetched_at=%s\n' \
    "$KAFKA_VERSION" "$jars" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp/$STAMP_FILE"
  # A libs/ without stamp is the leftover of an older, interrupted layout, one
  # without the tools jar that of an older pom.xml: move it aside (rename is
  # atomic; running brokers keep their open jars) before putting the complete
  # one in place.
  if [[ -e $LIBS_DIR ]] && ! cache_complete; then
    mv "$LIBS_DIR" "$(mktemp -u "$CACHE_DIR/libs.old.XXXXXX")"
  fi
  if ! mv -T "$tmp" "$LIBS_DIR" 2>/dev/null; then
    rm -rf "$tmp"
    cache_complete || die "could not move the fetched jars into $LIBS_DIR"
    # Another fetch finished first; its result is just as good.
  fi
  trap - EXIT
  log "Fetched $jars jars in $(fmt_ms $(($(now_ms) - started)))"
}

# ---------------------------------------------------------------------------
# Modes and nodes
# ---------------------------------------------------------------------------

select_mode() { # single|cluster
  MODE=$1
  NODE_DIRS=()
  NODE_IDS=()
  BROKER_PORTS=()
  CONTROLLER_PORTS=()
  case $MODE in
    single)
      check_port_var KAFKA_PORT "$KAFKA_PORT" 65532
      MODE_DIR="$SINGLE_DIR"
      NODE_DIRS=("$SINGLE_DIR")
      NODE_IDS=(1)
      BROKER_PORTS=("$KAFKA_PORT")
      CONTROLLER_PORTS=($((KAFKA_PORT + 1)))
      SASL_PORT=$((KAFKA_PORT + 2))
      TLS_PORT=$((KAFKA_PORT + 3))
      ;;
    cluster)
      check_port_var KAFKA_CLUSTER_PORT_BASE "$CLUSTER_PORT_BASE" 65433
      MODE_DIR="$CLUSTER_DIR"
      local i
      for ((i = 1; i <= CLUSTER_SIZE; i++)); do
        NODE_DIRS+=("$CLUSTER_DIR/node$i")
        NODE_IDS+=("$i")
        BROKER_PORTS+=($((CLUSTER_PORT_BASE + i - 1)))
        CONTROLLER_PORTS+=($((CLUSTER_PORT_BASE + 100 + i - 1)))
      done
      ;;
    *) usage_error "unknown mode '$MODE' (expected single or cluster)" ;;
  esac
}

bootstrap_servers() {
  local port list=""
  for port in "${BROKER_PORTS[@]}"; do list+="${list:+,}127.0.0.1:$port"; done
  printf '%s\n' "$list"
}

# Prints server.properties for node index $1 of the selected mode.
render_config() {
  local idx=$1
  local dir=${NODE_DIRS[idx]} port=${BROKER_PORTS[idx]} cport=${CONTROLLER_PORTS[idx]}
  local rf isr quorum
  # Single: a dynamic quorum, formatted with --standalone. Cluster: a static
  # voter set, so the three nodes are formatted alike (no controller directory
  # ids to generate and pass around as with --initial-controllers).
  if [[ $MODE == single ]]; then
    rf=1 isr=1
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport"
  else
    rf=$CLUSTER_SIZE isr=2
    local i voters=""
    for i in "${!NODE_IDS[@]}"; do
      voters+="${voters:+,}${NODE_IDS[i]}@127.0.0.1:${CONTROLLER_PORTS[i]}"
    done
    quorum="controller.quorum.voters=$voters"
  fi
  local listeners="PLAINTEXT://127.0.0.1:$port" protocols="PLAINTEXT:PLAINTEXT" secured=""
  if [[ $MODE == single ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$TLS_PORT"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"
    local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
    secured="sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$scram
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$(<"$dir/tls/keystore.password")
ssl.client.auth=none"
  fi
  cat <<EOF
# Generated by $PROG on every start; edits are overwritten.
process.roles=broker,controller
node.id=${NODE_IDS[idx]}
$quorum
listeners=$listeners,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$protocols
inter.broker.listener.name=PLAINTEXT
$secured
log.dirs=$dir/data

auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
EOF
}

# The ports a node's storage was formatted for; the quorum remembers them.
ports_signature() { printf 'broker=%s controller=%s\n' "${BROKER_PORTS[$1]}" "${CONTROLLER_PORTS[$1]}"; }

node_label() {
  if [[ $MODE == single ]]; then
    printf 'kafka single (127.0.0.1:%s)' "${BROKER_PORTS[$1]}"
  else
    printf 'kafka cluster node %s (127.0.0.1:%s)' "${NODE_IDS[$1]}" "${BROKER_PORTS[$1]}"
  fi
}

# ---------------------------------------------------------------------------
# Processes. A broker JVM carries -Dtorchkafka.node=<node dir>; a pid is only
# ever treated as ours (and signalled) when its command line has that exact
# argument and kafka.Kafka, so a recycled pid is never touched.
# ---------------------------------------------------------------------------

node_marker() { printf -- '-Dtorchkafka.node=%s' "$1"; }

# True when process $1 is the broker JVM of node dir $2.
pid_is_node() {
  local pid=$1 dir=$2 args="" _
  # The command line reads empty for a zombie and, briefly, while the process
  # execs (setsid -> nohup -> java right after launch): retry a little.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [[ -r /proc/$pid/cmdline ]] || return 1
    args="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ -n $args ]] && break
    sleep 0.05
  done
  grep -qxF -- "$(node_marker "$dir")" <<<"$args" && grep -qxF kafka.Kafka <<<"$args"
}

# Finds a broker JVM of node dir $1 by its marker (e.g. when the pid file was lost).
scan_node_pid() {
  local dir=$1 file pid
  while IFS= read -r file; do
    pid="${file#/proc/}"
    pid="${pid%/cmdline}"
    if pid_is_node "$pid" "$dir"; then
      printf '%s\n' "$pid"
      return 0
    fi
  done < <(grep -lzxF -- "$(node_marker "$dir")" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}

# Prints the pid of node dir $1's running broker, or fails. Cleans a stale pid
# file and re-adopts a running broker whose pid file is missing.
node_pid() {
  local dir=$1 pid_file="$1/kafka.pid" pid=""
  if [[ -f $pid_file ]]; then
    pid="$(<"$pid_file")"
    if [[ $pid =~ ^[0-9]+$ ]] && pid_is_node "$pid" "$dir"; then
      printf '%s\n' "$pid"
      return 0
    fi
    rm -f "$pid_file"
    warn "removed stale pid file $pid_file (pid ${pid:-?} is gone or is not this broker)"
  fi
  if pid="$(scan_node_pid "$dir")"; then
    mkdir -p "$dir"
    printf '%s\n' "$pid" >"$pid_file"
    warn "found broker of $dir running as pid $pid without a pid file; adopted it"
    printf '%s\n' "$pid"
    return 0
  fi
  return 1
}

# Prints the broker ids (one per line) listed in a metadata response from the
# given bootstrap servers, or fails when none answers.
metadata_broker_ids() {
  local out
  if [[ -n $KCAT ]]; then
    out="$("$KCAT" -b "$1" -L -m 3 2>/dev/null)" || return 1
  else
    out="$("$PYTHON" -c "$METADATA_PROBE" "$1" 2>/dev/null)" || return 1
  fi
  sed -n 's/^ *broker \([0-9][0-9]*\) at .*/\1/p' <<<"$out" | sort -n
}

# kcat -L's broker lines ("  broker ID at HOST:PORT") through confluent-kafka.
readonly METADATA_PROBE='
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
for broker in admin.list_topics(timeout=3).brokers.values():
    print(f"  broker {broker.id} at {broker.host}:{broker.port}")
'

# True when every broker of the selected mode answers a metadata request on
# its own port and each response lists all of the mode's broker ids. (Asking
# each broker itself matters: after a crash the controller keeps listing the
# dead broker's registration for a few seconds.)
all_brokers_answer() {
  local port ids id
  for port in "${BROKER_PORTS[@]}"; do
    port_open "$port" || return 1 # skips kcat's connect timeout while nothing listens
    ids="$(metadata_broker_ids "127.0.0.1:$port")" || return 1
    for id in "${NODE_IDS[@]}"; do
      grep -qx -- "$id" <<<"$ids" || return 1
    done
  done
}

print_log_tail() { # node dir
  local dir=$1 file shown=0
  for file in "$dir/logs/server.log" "$dir/logs/kafka.out"; do
    if [[ -s $file ]]; then
      printf -- '--- last 30 lines of %s ---\n' "$file" >&2
      tail -n 30 "$file" >&2
      shown=1
    fi
  done
  if ((!shown)); then
    printf -- '--- no log output yet in %s/logs ---\n' "$dir" >&2
  fi
}

# SIGKILLs node index $1's broker, pid $2, and waits until it is gone.
kill_node() {
  kill -KILL "$2" 2>/dev/null || true
  while pid_is_node "$2" "${NODE_DIRS[$1]}"; do sleep 0.1; done
}

# Stops the brokers of the selected mode's node indexes $2...: SIGTERM to all
# of them at once (a quorum member stopped after the others would wait for the
# lost majority), up to $1 seconds for them to exit, then SIGKILL.
stop_nodes() {
  local grace=$1 idx pid deadline
  local -a todo=() pids=()
  shift
  for idx in "$@"; do
    if pid="$(node_pid "${NODE_DIRS[idx]}")"; then
      log "Stopping $(node_label "$idx") (pid $pid) ..."
      kill -TERM "$pid" 2>/dev/null || true
      todo+=("$idx")
      pids[idx]=$pid
    else
      log "$(node_label "$idx") is not running"
    fi
  done
  deadline=$((SECONDS + grace))
  for idx in "${todo[@]}"; do
    while pid_is_node "${pids[idx]}" "${NODE_DIRS[idx]}" && ((SECONDS < deadline)); do
      sleep 0.2
    done
  done
  for idx in "${todo[@]}"; do
    if pid_is_node "${pids[idx]}" "${NODE_DIRS[idx]}"; then
      warn "$(node_label "$idx") (pid ${pids[idx]}) did not exit within ${grace}s; sending SIGKILL"
      kill_node "$idx" "${pids[idx]}"
    fi
    rm -f "${NODE_DIRS[idx]}/kafka.pid"
    log "Stopped $(node_label "$idx")"
  done
}

# Stops what this command launched after a failed start. A broker that gets
# SIGTERM mid-startup can hang in its shutdown hook, so the grace is short.
stop_launched() {
  if ((${#LAUNCHED[@]} > 0)); then
    stop_nodes "$ABORT_GRACE" "${LAUNCHED[@]}" >&2 || true
  fi
  LAUNCHED=()
}

on_interrupt() {
  trap - INT TERM
  # The signal may land inside a function whose output goes to /dev/null.
  exec 1>&"$STDERR_FD" 2>&"$STDERR_FD"
  printf '\nkafka.sh: interrupted; stopping the broker(s) started by this command\n' >&2
  stop_launched
  exit 130
}

# ---------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------

# Fails with a clear message when a port this node needs is taken by something else.
check_ports_free() {
  local idx=$1 port
  for port in "${BROKER_PORTS[idx]}" "${CONTROLLER_PORTS[idx]}" $SASL_PORT $TLS_PORT; do
    if port_open "$port"; then
      die "port $port on 127.0.0.1 is already in use by another process; stop it or pick other ports (KAFKA_PORT / KAFKA_CLUSTER_PORT_BASE)"
    fi
  done
}

# Prints the cluster id of the selected mode, creating it on first use.
cluster_id() {
  local file="$MODE_DIR/cluster.id" id
  if [[ ! -s $file ]]; then
    mkdir -p "$MODE_DIR"
    id="$("$JAVA" -cp "$LIBS_DIR/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka.tools.StorageTool random-uuid printed '$id', not a cluster id"
    printf '%s\n' "$id" >"$file"
  fi
  cat "$file"
}

# Fails when node idx's storage was formatted for other ports (the quorum
# keeps the controller addresses, so they cannot just change).
check_ports_unchanged() {
  local idx=$1 dir=${NODE_DIRS[$1]} signature
  signature="$(ports_signature "$idx")"
  if [[ -f $dir/ports && "$(<"$dir/ports")" != "$signature" ]]; then
    die "$dir was set up with '$(<"$dir/ports")' but '$signature' is requested now; run '$PROG stop $MODE --clean' to start over with the new ports"
  fi
}

# Formats node idx's storage unless that was done before.
format_node() {
  local idx=$1 dir=${NODE_DIRS[$1]}
  [[ -f $dir/data/meta.properties ]] && return 0
  local -a args=(format -t "$(cluster_id)" -c "$dir/server.properties")
  [[ $MODE == single ]] && args+=(--standalone)
  # Data without meta.properties is what an interrupted format leaves behind.
  rm -rf "$dir/data"
  mkdir -p "$dir/data" "$dir/logs"
  if ! "$JAVA" "-Dkafka.logs.dir=$dir/logs" "-Dlog4j2.configurationFile=$LOG4J_CONFIG" \
    -cp "$LIBS_DIR/*" kafka.tools.StorageTool "${args[@]}" >"$dir/logs/format.out" 2>&1; then
    cat "$dir/logs/format.out" >&2
    die "formatting storage in $dir/data failed"
  fi
  ports_signature "$idx" >"$dir/ports"
}

launch_node() {
  local idx=$1 dir=${NODE_DIRS[$1]}
  local -a heap jvm argv
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a jvm <<<"$JVM_OPTS"
  argv=("$JAVA" "${heap[@]}" "${jvm[@]}" "$(node_marker "$dir")"
    "-Dkafka.logs.dir=$dir/logs" "-Dlog4j2.configurationFile=$LOG4J_CONFIG"
    -cp "$LIBS_DIR/*" kafka.Kafka "$dir/server.properties")
  # One log per run, so a failure shows this run's lines; keep the previous.
  if [[ -f $dir/logs/server.log ]]; then
    mv -f "$dir/logs/server.log" "$dir/logs/server.previous.log"
  fi
  # A new session detaches the JVM from this terminal (no SIGINT/SIGHUP on ^C
  # or logout). In a script the background child is no process group leader,
  # so setsid execs in place and $! is the JVM's pid (node_pid also finds the
  # JVM by its marker should that ever differ).
  local -a detach=(nohup)
  if command -v setsid >/dev/null 2>&1; then detach=(setsid nohup); fi
  (
    close_extra_fds
    exec "${detach[@]}" "${argv[@]}" >"$dir/logs/kafka.out" 2>&1 </dev/null
  ) &
  printf '%s\n' "$!" >"$dir/kafka.pid"
  LAUNCHED+=("$idx")
}

# Waits until all nodes answer; on failure prints logs, stops what this command
# launched and exits 1.
wait_until_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) idx
  while true; do
    for idx in "${!NODE_DIRS[@]}"; do
      if ! node_pid "${NODE_DIRS[idx]}" >/dev/null 2>&1; then
        printf 'kafka.sh: error: %s exited during startup\n' "$(node_label "$idx")" >&2
        print_log_tail "${NODE_DIRS[idx]}"
        stop_launched
        exit 1
      fi
    done
    if all_brokers_answer; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      printf 'kafka.sh: error: kafka %s did not answer within %ss (KAFKA_START_TIMEOUT)\n' "$MODE" "$START_TIMEOUT" >&2
      for idx in "${!NODE_DIRS[@]}"; do print_log_tail "${NODE_DIRS[idx]}"; done
      stop_launched
      exit 1
    fi
    sleep 0.25
  done
}

cmd_start() {
  select_mode "$1"
  take_lock "$RUN_DIR/.kafka-$MODE.lock"
  require_java
  require_kcat
  check_seconds_var KAFKA_START_TIMEOUT "$START_TIMEOUT"
  check_seconds_var KAFKA_STOP_TIMEOUT "$STOP_TIMEOUT"
  cache_ready || cmd_fetch

  local started idx dir running=0
  started="$(now_ms)"
  for idx in "${!NODE_DIRS[@]}"; do
    check_ports_unchanged "$idx"
    if node_pid "${NODE_DIRS[idx]}" >/dev/null; then running=$((running + 1)); fi
  done
  if ((running == ${#NODE_DIRS[@]})) && all_brokers_answer; then
    log "kafka $MODE is already running and answering at $(bootstrap_servers)"
    return 0
  fi

  exec {STDERR_FD}>&2
  trap on_interrupt INT TERM
  for idx in "${!NODE_DIRS[@]}"; do
    dir=${NODE_DIRS[idx]}
    node_pid "$dir" >/dev/null && continue
    check_ports_free "$idx"
    mkdir -p "$dir/logs"
    [[ $MODE == single ]] && make_tls_files "$dir/tls"
    render_config "$idx" >"$dir/server.properties"
    format_node "$idx"
  done
  for idx in "${!NODE_DIRS[@]}"; do
    dir=${NODE_DIRS[idx]}
    node_pid "$dir" >/dev/null && continue
    launch_node "$idx"
    log "Launched $(node_label "$idx") as pid $(<"$dir/kafka.pid"); log: $dir/logs/server.log"
  done
  if ((${#LAUNCHED[@]} == 0)); then
    log "kafka $MODE is running; waiting for it to answer ..."
  fi
  wait_until_ready
  trap - INT TERM
  LAUNCHED=()
  log "kafka $MODE is up at $(bootstrap_servers) (startup took $(fmt_ms $(($(now_ms) - started))))"
  if [[ $MODE == single ]]; then
    log "  SASL/SCRAM (SCRAM-SHA-256/512) at 127.0.0.1:$SASL_PORT; TLS at 127.0.0.1:$TLS_PORT, CA $MODE_DIR/tls/ca.pem"
  fi
}

# ---------------------------------------------------------------------------
# stop / status
# ---------------------------------------------------------------------------

stop_mode() { # mode clean(0|1)
  select_mode "$1"
  take_lock "$RUN_DIR/.kafka-$MODE.lock"
  stop_nodes "$STOP_TIMEOUT" "${!NODE_DIRS[@]}"
  if (($2)) && [[ -d $MODE_DIR ]]; then
    rm -rf "$MODE_DIR"
    log "Removed $MODE_DIR"
  fi
}

cmd_stop() {
  local target=$1 clean=$2
  check_seconds_var KAFKA_STOP_TIMEOUT "$STOP_TIMEOUT"
  case $target in
    single | cluster) stop_mode "$target" "$clean" ;;
    all)
      stop_mode single "$clean"
      stop_mode cluster "$clean"
      ;;
    *) usage_error "unknown stop target '$target' (expected single, cluster or all)" ;;
  esac
}

# SIGKILLs the broker of node id $2 of mode $1 (every node when $2 is empty):
# no controlled shutdown, as in a crash. Its pid file goes; its data stays.
cmd_kill() {
  select_mode "$1"
  local idx pid
  local -a targets=("${!NODE_DIRS[@]}")
  if [[ -n $2 ]]; then
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= 1 && $2 <= ${#NODE_DIRS[@]})) \
      || usage_error "kill $MODE: no node '$2' (nodes 1-${#NODE_DIRS[@]})"
    targets=($(($2 - 1)))
  fi
  take_lock "$RUN_DIR/.kafka-$MODE.lock"
  for idx in "${targets[@]}"; do
    if pid="$(node_pid "${NODE_DIRS[idx]}")"; then
      kill_node "$idx" "$pid"
      rm -f "${NODE_DIRS[idx]}/kafka.pid"
      log "Killed $(node_label "$idx") (pid $pid)"
    else
      log "$(node_label "$idx") is not running"
    fi
  done
}

# Runs Kafka's consumer-groups tool (bin/kafka-consumer-groups.sh) with args $@.
cmd_consumer_groups() {
  require_java
  cache_complete || cmd_fetch >&2
  local -a jvm
  read -r -a jvm <<<"$JVM_OPTS"
  exec "$JAVA" -Xmx256m "${jvm[@]}" -cp "$LIBS_DIR/*" \
    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
}

cmd_status() {
  select_mode "$1"
  require_kcat
  local idx pid running=0
  for idx in "${!NODE_DIRS[@]}"; do
    if pid="$(node_pid "${NODE_DIRS[idx]}")"; then
      log "$(node_label "$idx"): running (pid $pid)"
      running=$((running + 1))
    else
      log "$(node_label "$idx"): stopped"
    fi
  done
  if ((running == 0)); then
    return 3
  fi
  local ids
  if ids="$(metadata_broker_ids "$(bootstrap_servers)")"; then
    log "metadata from $(bootstrap_servers): brokers $(paste -sd, <<<"$ids")"
  else
    log "metadata from $(bootstrap_servers): no answer"
  fi
  if ((running == ${#NODE_DIRS[@]})) && all_brokers_answer; then
    log "kafka $MODE: up"
    return 0
  fi
  log "kafka $MODE: not ready"
  return 1
}

# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  local cmd=$1
  shift
  case $cmd in
    -h | --help | help)
      usage
      ;;
    fetch)
      (($# == 0)) || usage_error "fetch takes no arguments"
      cmd_fetch
      ;;
    start | status)
      (($# <= 1)) || usage_error "$cmd takes at most one argument (single or cluster)"
      if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; return 0; fi
      "cmd_$cmd" "${1:-single}"
      ;;
    kill)
      (($# <= 2)) || usage_error "kill takes a mode (single or cluster) and a node"
      if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; return 0; fi
      cmd_kill "${1:-single}" "${2:-}"
      ;;
    consumer-groups)
      cmd_consumer_groups "$@"
      ;;
    stop)
      local target="" clean=0 arg
      for arg in "$@"; do
        case $arg in
          --clean) clean=1 ;;
          -h | --help) usage; return 0 ;;
          -*) usage_error "unknown option '$arg' for stop" ;;
          *)
            [[ -z $target ]] || usage_error "stop takes one target (single, cluster or all)"
            target=$arg
            ;;
        esac
      done
      cmd_stop "${target:-single}" "$clean"
      ;;
    *)
      usage_error "unknown command '$cmd'"
      ;;
  esac
}

main "$@"
