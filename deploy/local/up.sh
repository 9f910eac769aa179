#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Brings up the local development services: a single-node Kafka and Redis.
#
# Run `deploy/local/up.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROG="deploy/local/up.sh"
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

usage() {
  cat <<EOF
Usage: $PROG

Starts the local services torchkafka needs, each only if not running yet:
  1. deploy/local/install-system-deps.sh  (skipped when TORCHKAFKA_SKIP_SYSTEM_DEPS=1)
  2. deploy/local/kafka.sh fetch           (no-op when the jars are cached)
  3. deploy/local/kafka.sh start single
  4. deploy/local/redis.sh start

Progress goes to stderr; stdout gets only the addresses, as shell assignments:
  KAFKA_BOOTSTRAP=127.0.0.1:9092
  REDIS_URL=redis://127.0.0.1:6379/0
so 'eval "\$($PROG)"' sets them in the calling shell.
KAFKA_PORT, REDIS_PORT and the other variables of kafka.sh / redis.sh apply.
Stop everything with deploy/local/down.sh.
EOF
}

main() {
  case ${1:-} in
    "") ;;
    -h | --help)
      usage
      return 0
      ;;
    *) usage_error "unexpected argument '$1'" ;;
  esac

  local started
  started="$(now_ms)"
  if [[ ${TORCHKAFKA_SKIP_SYSTEM_DEPS:-0} != 1 ]]; then
    "$SCRIPT_DIR/install-system-deps.sh" >&2
  fi
  "$SCRIPT_DIR/kafka.sh" fetch >&2
  "$SCRIPT_DIR/kafka.sh" start single >&2
  "$SCRIPT_DIR/redis.sh" start >&2
  printf 'Local services are up (%s).\n' "$(fmt_ms $(($(now_ms) - started)))" >&2

  printf 'KAFKA_BOOTSTRAP=127.0.0.1:%s\n' "${KAFKA_PORT:-9092}"
  printf 'REDIS_URL=redis://127.0.0.1:%s/0\n' "${REDIS_PORT:-6379}"
}

main "$@"
