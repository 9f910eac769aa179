#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs, with apt, the system tools the local Kafka/Redis scripts need,
# only those that are missing. Quiet when everything is present.
#
# Run `deploy/local/install-system-deps.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROG="deploy/local/install-system-deps.sh"
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

readonly MIN_JAVA_MAJOR=17

usage() {
  cat <<EOF
Usage: $PROG [--check]

Installs with apt whatever is missing of:
  java >= $MIN_JAVA_MAJOR   openjdk-17-jre-headless (a newer OpenJDK where 17 is not packaged)
  mvn           maven
  kcat          kcat (kafkacat on older releases)
  redis-server  redis-server
  redis-cli     redis-tools
  openssl       openssl (the local broker's TLS certificates)
  g++           g++ (torch.compile builds C++ kernels for the CPU)
  Python.h      python3-dev (those kernels include it; checked for \$PYTHON, default python3)
  promtool      prometheus (promtool checks the alert rules; the suite scrapes a worker with it)

Runs 'apt-get update' once, and only when something is missing. Uses sudo when
not run as root. Prints nothing when everything is present.

Options:
  --check     Only report what is missing (exit 1 if anything is).
  -h, --help  Show this help.
EOF
}

# Prints one line per missing tool: "<tool> <apt package>".
missing_tools() {
  local major
  if ! command -v java >/dev/null 2>&1; then
    printf 'java openjdk-17-jre-headless\n'
  elif ! major="$(java_major java)" || ((major < MIN_JAVA_MAJOR)); then
    printf 'java>=%s openjdk-17-jre-headless\n' "$MIN_JAVA_MAJOR"
  fi
  command -v mvn >/dev/null 2>&1 || printf 'mvn maven\n'
  command -v kcat >/dev/null 2>&1 || command -v kafkacat >/dev/null 2>&1 || printf 'kcat kcat\n'
  command -v redis-server >/dev/null 2>&1 || printf 'redis-server redis-server\n'
  command -v redis-cli >/dev/null 2>&1 || printf 'redis-cli redis-tools\n'
  command -v openssl >/dev/null 2>&1 || printf 'openssl openssl\n'
  command -v g++ >/dev/null 2>&1 || printf 'g++ g++\n'
  has_python_headers || printf 'Python.h python3-dev\n'
  command -v promtool >/dev/null 2>&1 || printf 'promtool prometheus\n'
}

# True when the Python that builds the venv has its C headers, or is not there.
has_python_headers() {
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || return 0
  "$python" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

# Runs a command as root: directly, or through sudo.
as_root() {
  if ((EUID == 0)); then
    "$@"
  else
    sudo "$@"
  fi
}

# True when apt knows an installable version of package $1.
apt_has() {
  apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}

# Maps a wanted package to what this release provides (after apt-get update).
resolve_package() {
  local pkg=$1 alt
  case $pkg in
    openjdk-17-jre-headless)
      for alt in openjdk-17-jre-headless openjdk-21-jre-headless openjdk-25-jre-headless; do
        if apt_has "$alt"; then
          printf '%s\n' "$alt"
          return 0
        fi
      done
      ;;
    kcat)
      if ! apt_has kcat && apt_has kafkacat; then
        printf 'kafkacat\n'
        return 0
      fi
      ;;
    *) ;;
  esac
  printf '%s\n' "$pkg"
}

main() {
  local check_only=0 arg
  for arg in "$@"; do
    case $arg in
      --check) check_only=1 ;;
      -h | --help)
        usage
        return 0
        ;;
      *) usage_error "unknown argument '$arg'" ;;
    esac
  done

  local -a tools=() packages=()
  local tool pkg
  while read -r tool pkg; do
    tools+=("$tool")
    packages+=("$pkg")
  done < <(missing_tools)
  ((${#packages[@]} == 0)) && return 0

  if ((check_only)); then
    log "Missing: ${tools[*]} (apt packages: ${packages[*]})"
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing ${tools[*]}, and apt-get is not available here; install the equivalent of these Debian packages: ${packages[*]}"
  fi
  if ((EUID != 0)) && ! command -v sudo >/dev/null 2>&1; then
    die "missing ${tools[*]}; installing needs root and sudo is not available. As root, run: apt-get update && apt-get install -y ${packages[*]}"
  fi

  log "Installing missing system packages for ${tools[*]}: ${packages[*]}"
  local apt_log
  apt_log="$(mktemp "${TMPDIR:-/tmp}/torchkafka-apt.XXXXXX")"
  if ! as_root apt-get update -qq >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get update failed"
  fi
  local -a resolved=()
  for pkg in "${packages[@]}"; do
    resolved+=("$(resolve_package "$pkg")")
  done
  # --no-upgrade: never touch the version of a package that is already there.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends --no-upgrade "${resolved[@]}" >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install ${resolved[*]} failed"
  fi
  rm -f "$apt_log"

  local -a still=()
  while read -r tool pkg; do still+=("$tool"); done < <(missing_tools)
  if ((${#still[@]} > 0)); then
    die "still missing after installing ${resolved[*]}: ${still[*]} (if 'java' is an older version, pick the new one with: sudo update-alternatives --config java)"
  fi
  log "Installed: ${resolved[*]}"
}

main "$@"
