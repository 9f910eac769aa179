# shellcheck shell=bash
# Helpers shared by the deploy/local scripts. Source it after setting PROG
# (how the script is invoked, e.g. deploy/local/kafka.sh); it defines
# functions only.

# Messages: log to stdout; warnings and errors to stderr, prefixed.
log() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "${PROG##*/}" "$*" >&2; }

# die [EXIT_CODE] MESSAGE... (exit code 1 unless given)
die() {
  local code=1
  if [[ $1 =~ ^[0-9]+$ ]]; then
    code=$1
    shift
  fi
  printf '%s: error: %s\n' "${PROG##*/}" "$*" >&2
  exit "$code"
}

usage_error() {
  printf '%s: %s\n' "${PROG##*/}" "$*" >&2
  printf "Run '%s --help' for usage.\n" "$PROG" >&2
  exit 2
}

# Exit code 2 with the apt package that provides a missing tool.
missing_tool() { # tool apt-package
  die 2 "'$1' not found on PATH. Install it with: sudo apt-get install -y $2 (or run deploy/local/install-system-deps.sh)"
}

# Makes a path absolute (relative to the current directory); it need not exist.
absolute_path() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

now_ms() { date +%s%3N; }

# Formats a millisecond duration as seconds with one decimal, e.g. 8.3s.
fmt_ms() { printf '%d.%ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

check_port_var() { # name value [highest allowed]
  local max=${3:-65535}
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > max)); then
    die 2 "$1 must be a port number (1-$max), got '$2'"
  fi
}

check_seconds_var() { # name value
  [[ $2 =~ ^[0-9]+$ ]] || die 2 "$1 must be a whole number of seconds, got '$2'"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Closes every file descriptor above 2 of the current (sub)shell. Call it in
# the subshell that starts a daemon, so the daemon cannot keep a caller's
# pipe open (e.g. the stdout of `$(deploy/local/up.sh)` would never end).
close_extra_fds() {
  local fd
  [[ -d /proc/$BASHPID/fd ]] || return 0
  for fd in "/proc/$BASHPID/fd/"*; do
    fd=${fd##*/}
    if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
      eval "exec $fd>&-"
    fi
  done
}

# Serialises start/stop commands on lock file $1 (held until the script
# exits; a no-op where flock is missing). Daemons never inherit the lock fd:
# they are started through close_extra_fds.
take_lock() {
  local file=$1 fd
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "${file%/*}"
  exec {fd}>>"$file"
  if ! flock -n "$fd"; then
    log "Waiting for another ${PROG##*/} command to finish (lock $file) ..." >&2
    flock -w 300 "$fd" || die "gave up waiting for the lock $file after 300s"
  fi
}

# Prints the major version of the java binary $1 (8 for 1.8.0_x), or fails.
java_major() {
  local version major
  version="$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
  major="${version%%.*}"
  if [[ $major == 1 ]]; then
    major="$(printf '%s' "$version" | cut -d. -f2)"
  fi
  [[ $major =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$major"
}
