#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops the local development services: Redis and Kafka (single and cluster).
#
# Run `deploy/local/down.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROG="deploy/local/down.sh"
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [--clean]

Stops Redis (deploy/local/redis.sh stop) and every local Kafka broker
(deploy/local/kafka.sh stop all). Stopping what is not running is fine.

Options:
  --clean     Also delete their data, logs and config under .run/ (fresh start).
  -h, --help  Show this help.
EOF
}

main() {
  local -a clean=()
  (($# <= 1)) || usage_error "too many arguments"
  case ${1:-} in
    "") ;;
    --clean) clean=(--clean) ;;
    -h | --help)
      usage
      return 0
      ;;
    *) usage_error "unexpected argument '$1'" ;;
  esac

  local rc=0
  "$SCRIPT_DIR/redis.sh" stop "${clean[@]}" || rc=1
  "$SCRIPT_DIR/kafka.sh" stop all "${clean[@]}" || rc=1
  ((rc == 0)) || die "some services did not stop cleanly (see above)"
}

main "$@"
