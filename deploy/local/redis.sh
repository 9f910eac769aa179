#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Local Redis for torchkafka development: Debian's redis-server with an
# append-only file, state under the repository's .run/redis/.
#
# Run `deploy/local/redis.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly PROG="deploy/local/redis.sh"
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

RUN_DIR="$(absolute_path "${TORCHKAFKA_RUN_DIR:-$REPO_ROOT/.run}")"
readonly RUN_DIR
readonly REDIS_DIR="$RUN_DIR/redis"
readonly PID_FILE="$REDIS_DIR/redis.pid"
readonly PORT_FILE="$REDIS_DIR/port"
readonly LOG_FILE="$REDIS_DIR/redis.log"
readonly REDIS_PORT="${REDIS_PORT:-6379}"
readonly START_TIMEOUT="${REDIS_START_TIMEOUT:-10}"
readonly STOP_TIMEOUT="${REDIS_STOP_TIMEOUT:-30}"

usage() {
  cat <<EOF
Usage: $PROG COMMAND

Run a local Redis (Debian redis-server) on 127.0.0.1:\$REDIS_PORT with the
settings dedup needs: an append-only file fsynced every second (a restart keeps
the done-marks; stop --clean loses them) and --maxmemory-policy noeviction.

Commands:
  start             Start redis-server in the background and wait for PONG.
                    Does nothing when it already runs and answers.
  stop [--clean]    Stop it (SIGTERM, then SIGKILL after a timeout); stopping a
                    stopped server is not an error. --clean also removes its
                    run directory.
  status            Exit 0: running and answering; 1: running, not answering;
                    3: stopped.
  -h, --help        Show this help.

Environment:
  REDIS_PORT            Port on 127.0.0.1 (default 6379).
  TORCHKAFKA_RUN_DIR    Run state root (default <repo>/.run); pid, log and
                        working dir go to \$TORCHKAFKA_RUN_DIR/redis/.
  REDIS_START_TIMEOUT   Seconds to wait for PONG (default 10).
  REDIS_STOP_TIMEOUT    Seconds to wait after SIGTERM before SIGKILL (default 30).

Requires redis-server and redis-cli (apt packages redis-server, redis-tools).
EOF
}

require_redis() {
  command -v redis-server >/dev/null 2>&1 || missing_tool redis-server redis-server
  command -v redis-cli >/dev/null 2>&1 || missing_tool redis-cli redis-tools
}

check_settings() {
  check_port_var REDIS_PORT "$REDIS_PORT"
  check_seconds_var REDIS_START_TIMEOUT "$START_TIMEOUT"
  check_seconds_var REDIS_STOP_TIMEOUT "$STOP_TIMEOUT"
}

# True when process $1 is our redis-server: redis rewrites its command line,
# so it is recognised by its name and its working directory (--dir).
pid_is_ours() {
  local pid=$1 comm cwd dir
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ $comm == redis-server ]] || return 1
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null)" || return 1
  dir="$(cd "$REDIS_DIR" 2>/dev/null && pwd -P)" || return 1
  [[ $cwd == "$dir" ]]
}

# Prints the pid of our running redis-server, or fails (removing a stale pid file).
redis_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid="$(<"$PID_FILE")"
  if [[ $pid =~ ^[0-9]+$ ]] && pid_is_ours "$pid"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$PID_FILE"
  warn "removed stale pid file $PID_FILE (pid ${pid:-?} is gone or is not this redis-server)"
  return 1
}

# The port our running server was started on (the state file), else REDIS_PORT.
running_port() {
  if [[ -f $PORT_FILE ]]; then cat "$PORT_FILE"; else printf '%s\n' "$REDIS_PORT"; fi
}

answers_ping() { # port
  [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
}

launch() {
  mkdir -p "$REDIS_DIR"
  rm -f "$PID_FILE"
  : >"$LOG_FILE"
  printf '%s\n' "$REDIS_PORT" >"$PORT_FILE"
  # The daemon must not inherit our other file descriptors (callers' pipes).
  if ! (close_extra_fds && exec redis-server \
    --port "$REDIS_PORT" \
    --bind 127.0.0.1 \
    --save '' \
    --appendonly yes \
    --appendfsync everysec \
    --maxmemory-policy noeviction \
    --daemonize yes \
    --pidfile "$PID_FILE" \
    --logfile "$LOG_FILE" \
    --dir "$REDIS_DIR"); then
    tail -n 30 "$LOG_FILE" >&2 || true
    die "redis-server failed to start"
  fi
}

wait_until_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while true; do
    if answers_ping "$REDIS_PORT" && redis_pid >/dev/null 2>&1; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      printf '%s: error: redis did not answer PING on 127.0.0.1:%s within %ss (REDIS_START_TIMEOUT)\n' \
        "${PROG##*/}" "$REDIS_PORT" "$START_TIMEOUT" >&2
      printf -- '--- last 30 lines of %s ---\n' "$LOG_FILE" >&2
      tail -n 30 "$LOG_FILE" >&2 || true
      stop_server "$START_TIMEOUT" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

cmd_start() {
  local started pid port
  require_redis
  check_settings
  take_lock "$RUN_DIR/.redis.lock"
  started="$(now_ms)"
  if pid="$(redis_pid)"; then
    port="$(running_port)"
    if [[ $port != "$REDIS_PORT" ]]; then
      die "redis is already running on port $port (pid $pid), not $REDIS_PORT; run '$PROG stop' first"
    fi
    if answers_ping "$REDIS_PORT"; then
      log "redis is already running and answering at redis://127.0.0.1:$REDIS_PORT/0 (pid $pid)"
      return 0
    fi
    log "redis is running (pid $pid) but does not answer yet; waiting ..."
  else
    if port_open "$REDIS_PORT"; then
      die "port $REDIS_PORT on 127.0.0.1 is already in use by another process (a system redis-server service? 'sudo systemctl stop redis-server', or set REDIS_PORT)"
    fi
    launch
  fi
  wait_until_ready
  pid="$(redis_pid)"
  log "redis is up at redis://127.0.0.1:$REDIS_PORT/0 (pid $pid; startup took $(fmt_ms $(($(now_ms) - started))))"
}

# SIGTERM, up to $1 seconds for the exit, then SIGKILL.
stop_server() {
  local grace=$1 pid deadline
  if ! pid="$(redis_pid)"; then
    log "redis is not running"
    return 0
  fi
  log "Stopping redis (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while pid_is_ours "$pid" && ((SECONDS < deadline)); do
    sleep 0.1
  done
  if pid_is_ours "$pid"; then
    warn "redis (pid $pid) did not exit within ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_is_ours "$pid"; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  log "Stopped redis"
}

cmd_stop() {
  local clean=$1
  check_seconds_var REDIS_STOP_TIMEOUT "$STOP_TIMEOUT"
  take_lock "$RUN_DIR/.redis.lock"
  stop_server "$STOP_TIMEOUT"
  if ((clean)) && [[ -d $REDIS_DIR ]]; then
    rm -rf "$REDIS_DIR"
    log "Removed $REDIS_DIR"
  fi
}

cmd_status() {
  local pid port
  require_redis
  if ! pid="$(redis_pid)"; then
    log "redis: stopped"
    return 3
  fi
  port="$(running_port)"
  if answers_ping "$port"; then
    log "redis: up at redis://127.0.0.1:$port/0 (pid $pid)"
    return 0
  fi
  log "redis: running (pid $pid) but not answering on 127.0.0.1:$port"
  return 1
}

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  local cmd=$1 clean=0 arg
  shift
  for arg in "$@"; do
    case $arg in
      -h | --help)
        usage
        return 0
        ;;
      --clean)
        [[ $cmd == stop ]] || usage_error "--clean only applies to stop"
        clean=1
        ;;
      *) usage_error "unexpected argument '$arg' for $cmd" ;;
    esac
  done
  case $cmd in
    -h | --help | help) usage ;;
    start) cmd_start ;;
    stop) cmd_stop "$clean" ;;
    status) cmd_status ;;
    *) usage_error "unknown command '$cmd'" ;;
  esac
}

main "$@"
