#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# The prepared GPU check: on a machine with one NVIDIA GPU and PyTorch but no
# network, unpack the bundle (bench/gpu_bundle.sh), start the local Kafka
# broker and Redis, run bench/gpu_check.py, and always stop the services.
# Finishes within GPU_CHECK_LIMIT seconds (default 470). See docs/gpu-check.md.
#
# Run `bench/gpu_check.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly PROG="bench/gpu_check.sh"
# shellcheck source=deploy/local/lib/common.sh
. "$REPO_ROOT/deploy/local/lib/common.sh"

readonly DEPLOY="$REPO_ROOT/deploy/local"
BUNDLE="$(absolute_path "${TORCHKAFKA_GPU_BUNDLE:-$REPO_ROOT/.gpu-bundle}")"
WORK="$(absolute_path "${TORCHKAFKA_GPU_WORK:-${TMPDIR:-/tmp}/torchkafka-gpu}")"
readonly BUNDLE WORK
readonly LIMIT="${GPU_CHECK_LIMIT:-470}"
# Seconds kept back from the check for stopping it (SIGTERM, then SIGKILL
# after KILL_GRACE) and for stopping the services.
readonly TEARDOWN=45 KILL_GRACE=20
# Seconds before the check's own hard stop at which it starts no new variant.
readonly BUDGET_MARGIN=60
readonly WHEEL_MODULES="confluent_kafka, redis, structlog, tenacity"
PYTHON="${TORCHKAFKA_PYTHON:-python3}"
STARTED=$SECONDS

usage() {
  cat <<EOF
Usage: $PROG [gpu_check.py options, e.g. --device cpu --quick]

  1. unpacks $BUNDLE (if present) into \$TORCHKAFKA_GPU_WORK
     (default /tmp/torchkafka-gpu): a Java runtime, the Kafka jars,
     redis-server, and wheels for what the Python lacks
  2. starts Kafka (deploy/local/kafka.sh start single) and Redis
     (deploy/local/redis.sh start), run state in \$TORCHKAFKA_GPU_WORK/run
  3. runs bench/gpu_check.py with a --budget that fits, under a hard limit
  4. stops both services, whatever happened

Exit status: gpu_check.py's (0 all passed, 1 a variant failed), or 1 when
setup failed, or 124 when the limit was hit.

Environment:
  GPU_CHECK_LIMIT        seconds for everything (default 470, under 8 minutes)
  TORCHKAFKA_GPU_BUNDLE  the bundle folder (default <repo>/.gpu-bundle)
  TORCHKAFKA_GPU_WORK    where it is unpacked (default /tmp/torchkafka-gpu)
  TORCHKAFKA_PYTHON      the Python with torch (default python3)
  KAFKA_PORT, REDIS_PORT as for deploy/local (default 9092, 6379)
EOF
}

elapsed() { printf '%ds' $((SECONDS - STARTED)); }

# Unpacks $BUNDLE/$1.tar.xz into $2 once (a stamp names the archive's size and time).
unpack() {
  local archive="$BUNDLE/$1.tar.xz" into=$2 stamp
  [[ -f $archive ]] || return 1
  stamp="$(stat -c '%s %Y' "$archive")"
  if [[ -f $into/.$1.unpacked && "$(<"$into/.$1.unpacked")" == "$stamp" ]]; then
    return 0
  fi
  mkdir -p "$into"
  if command -v xz >/dev/null 2>&1; then
    tar -C "$into" -xJf "$archive"
  else # Python's lzma module does the same, a little slower
    "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
      "$archive" "$into"
  fi
  printf '%s\n' "$stamp" >"$into/.$1.unpacked"
  log "unpacked $1 ($(elapsed))"
}

# Fails naming the libraries binary $1 needs that this machine lacks.
check_libraries() {
  local missing
  command -v ldd >/dev/null 2>&1 || return 0
  missing="$(LD_LIBRARY_PATH="${2:-}" ldd "$1" 2>/dev/null | awk '/not found/ {print $1}' | paste -sd' ')" || true
  [[ -z $missing ]] || die "$1 needs libraries this machine lacks: $missing"
}

setup() {
  if [[ -d $BUNDLE ]]; then
    log "bundle: $BUNDLE -> $WORK"
    if unpack jre "$WORK"; then
      export JAVA_HOME="$WORK/jre"
      check_libraries "$JAVA_HOME/lib/server/libjvm.so"
    fi
    if unpack kafka-libs "$WORK/cache"; then
      export TORCHKAFKA_CACHE="$WORK/cache"
    fi
    if unpack redis "$WORK"; then
      export PATH="$WORK/redis/bin:$PATH"
      check_libraries "$WORK/redis/libexec/redis-server" "$WORK/redis/lib"
    fi
  else
    log "no bundle at $BUNDLE: using java, redis-server and the Python packages installed here"
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON; set TORCHKAFKA_PYTHON"
  if ! "$PYTHON" -c "import $WHEEL_MODULES" 2>/dev/null; then
    compgen -G "$BUNDLE/wheels/*.whl" >/dev/null \
      || die "$PYTHON lacks some of $WHEEL_MODULES and $BUNDLE/wheels has no wheels"
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
      "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$WORK/site" "$BUNDLE"/wheels/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -c "import $WHEEL_MODULES" || die "the bundle's wheels do not import"
    log "installed the bundle's wheels into $WORK/site ($(elapsed))"
  fi
  if ! "$PYTHON" -c 'import torchkafka.worker' 2>/dev/null; then
    # The package is not installed: import it from the checkout, through
    # .typecheck/torchkafka/{codecs,topology,worker} -> the top-level folders.
    export PYTHONPATH="$REPO_ROOT/.typecheck${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -c 'import torchkafka.worker' || die "cannot import torchkafka from $REPO_ROOT"
  fi
  export TORCHKAFKA_PYTHON="$PYTHON" # kafka.sh's readiness probe when kcat is missing
  export TORCHKAFKA_RUN_DIR="$WORK/run"
  export KAFKA_BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-9092}"
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}/0"
}

stop_services() {
  log "stopping the services ($(elapsed))"
  "$DEPLOY/redis.sh" stop || true
  "$DEPLOY/kafka.sh" stop single || true
}

main() {
  case ${1:-} in
    -h | --help)
      usage
      return 0
      ;;
  esac
  check_seconds_var GPU_CHECK_LIMIT "$LIMIT"
  setup
  trap stop_services EXIT
  "$DEPLOY/kafka.sh" start single
  "$DEPLOY/redis.sh" start
  local left=$((LIMIT - (SECONDS - STARTED) - TEARDOWN)) rc=0
  ((left > BUDGET_MARGIN + 60)) || die "only ${left}s left for the check after setup ($(elapsed))"
  log "running bench/gpu_check.py: ${left}s at most, budget $((left - BUDGET_MARGIN))s ($(elapsed))"
  PYTHONUNBUFFERED=1 \
    timeout --signal=TERM --kill-after="$KILL_GRACE" "$left" \
    "$PYTHON" "$SCRIPT_DIR/gpu_check.py" --budget "$((left - BUDGET_MARGIN))" "$@" || rc=$?
  log "bench/gpu_check.py exited with $rc ($(elapsed))"
  return "$rc"
}

main "$@"
