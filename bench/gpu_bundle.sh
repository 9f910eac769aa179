#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# Builds .gpu-bundle/: what bench/gpu_check.sh needs on a GPU machine that has
# PyTorch but no network, no Java, no Kafka, no Redis and no Kafka/Redis Python
# clients. Run it here (a Debian/Ubuntu x86-64 machine with `make up` done);
# see docs/gpu-check.md.
#
# Run `bench/gpu_bundle.sh --help` for usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly PROG="bench/gpu_bundle.sh"
# shellcheck source=deploy/local/lib/common.sh
. "$REPO_ROOT/deploy/local/lib/common.sh"

KAFKA_VERSION="$(sed -n 's/^readonly KAFKA_VERSION="\(.*\)"$/\1/p' "$REPO_ROOT/deploy/local/kafka.sh")"
readonly KAFKA_VERSION
CACHE_ROOT="$(absolute_path "${TORCHKAFKA_CACHE:-$HOME/.cache/torchkafka}")"
readonly LIBS_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION/libs"
readonly VENV_PYTHON="$REPO_ROOT/.venv/bin/python"

# The smallest module set with which the broker formats its storage, starts
# in KRaft mode and serves idempotent, transactional and compressed produce
# and group consume (each found missing by a failed start or request):
#   java.desktop         java.beans, which log4j-core needs (its native
#                        AWT/sound/font libraries are left out)
#   java.management      JMX: the broker's metrics
#   java.security.sasl   javax.security.sasl, in the client network layer
#   java.xml             log4j-core's configuration classes
#   jdk.unsupported      sun.misc.Signal and Unsafe (kafka, lz4, zstd)
# java.naming is left out: log4j then warns once that JNDI lookups are off.
readonly JRE_MODULES="java.base,java.desktop,java.management,java.security.sasl,java.xml,jdk.unsupported"
readonly JRE_EXCLUDED_FILES="**/libawt*.so,**/libfontmanager.so,**/libjavajpeg.so,**/libjawt.so,**/libjsound.so,**/liblcms.so,**/libmlib_image.so,**/libsplashscreen.so,**/psfont*"

# What the worker imports that the GPU machine's image lacks (its KINDS.md
# package list); versions pinned to those in this checkout's .venv.
readonly WHEEL_PACKAGES=(confluent-kafka redis structlog tenacity)
# Libraries the GPU machine must provide itself (glibc, the C++ runtime);
# every other library redis-server and redis-cli link is carried.
readonly SYSTEM_LIBS_RE='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so'

usage() {
  cat <<EOF
Usage: $PROG [--out DIR] [--force]

Builds DIR (default .gpu-bundle/, git-ignored) for bench/gpu_check.sh:
  jre.tar.xz          a jlink-ed Java runtime: $JRE_MODULES
  kafka-libs.tar.xz   the Kafka $KAFKA_VERSION broker jars from the cache, with the
                      native libraries of other platforms removed and entries
                      stored uncompressed (xz compresses them far better)
  redis.tar.xz        redis-server and redis-cli with the libraries they link
                      (except glibc and libstdc++), behind wrapper scripts
  wheels/             ${WHEEL_PACKAGES[*]} for CPython 3.12, manylinux x86-64
  MANIFEST.txt        versions, sizes and sha256 sums

Each part is built once; --force rebuilds them all. Needs: jlink (JDK 17),
xz, the Kafka jars (deploy/local/kafka.sh fetch), redis-server and
redis-cli, this checkout's .venv, and pip access to PyPI for wheels not yet
in DIR/wheels (copy them there to build offline).
EOF
}

# ---------------------------------------------------------------------------

build_jre() {
  local out=$1 work
  command -v jlink >/dev/null 2>&1 || missing_tool jlink openjdk-17-jdk-headless
  work="$(mktemp -d)"
  log "jre: jlink $JRE_MODULES"
  jlink --add-modules "$JRE_MODULES" --strip-debug --no-header-files --no-man-pages \
    --compress=0 --strip-native-debug-symbols=exclude-debuginfo-files \
    "--exclude-files=$JRE_EXCLUDED_FILES" --output "$work/jre" 2>&1 | grep -v '^Warning' || true
  [[ -x $work/jre/bin/java ]] || die "jlink did not produce $work/jre/bin/java"
  find "$work/jre" -name '*.so' -exec strip --strip-unneeded {} + 2>/dev/null || true
  tar -C "$work" -cf - jre | xz -9 -T0 >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

build_kafka_libs() {
  local out=$1 work
  [[ -f $LIBS_DIR/.torchkafka-complete ]] \
    || die "no Kafka jars in $LIBS_DIR; run deploy/local/kafka.sh fetch first"
  work="$(mktemp -d)"
  mkdir -p "$work/kafka-$KAFKA_VERSION/libs"
  log "kafka-libs: repacking $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars from $LIBS_DIR"
  python3 - "$LIBS_DIR" "$work/kafka-$KAFKA_VERSION/libs" <<'EOF'
"""Copy each jar with its entries stored; drop native libraries of other platforms."""
import shutil
import sys
import zipfile
from pathlib import Path

NATIVE = (".so", ".dll", ".dylib", ".jnilib")
HERE = ("linux/amd64/", "linux/x86_64/")
source, target = Path(sys.argv[1]), Path(sys.argv[2])
for jar in sorted(source.glob("*.jar")):
    with zipfile.ZipFile(jar) as zin, zipfile.ZipFile(target / jar.name, "w") as zout:
        for info in zin.infolist():
            name = info.filename.lower()
            if name.endswith(NATIVE) and not any(part in name for part in HERE):
                continue
            zout.writestr(info, zin.read(info), compress_type=zipfile.ZIP_STORED)
shutil.copy(source / ".torchkafka-complete", target / ".torchkafka-complete")
EOF
  tar -C "$work" -cf - "kafka-$KAFKA_VERSION" | xz -9 -T0 >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

build_redis() {
  local out=$1 work tool real
  work="$(mktemp -d)"
  mkdir -p "$work/redis/bin" "$work/redis/libexec" "$work/redis/lib"
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || missing_tool "$tool" "${tool/cli/tools}"
    real="$(readlink -f "$(command -v "$tool")")"
    # Named as the tool: redis-server decides its mode by its name, and
    # deploy/local/redis.sh recognises its process by that name.
    cp "$real" "$work/redis/libexec/$tool"
    cat >"$work/redis/bin/$tool" <<EOF
#!/bin/sh
# $tool with the libraries carried beside it (bench/gpu_bundle.sh).
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/libexec/$tool" "\$@"
EOF
    chmod +x "$work/redis/bin/$tool"
    ldd "$real" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
      [[ ${lib##*/} =~ $SYSTEM_LIBS_RE ]] || cp -L "$lib" "$work/redis/lib/"
    done
  done
  log "redis: $("$work/redis/bin/redis-server" --version | cut -d' ' -f1-3), libraries: $(find "$work/redis/lib" -type f -printf '%f ')"
  tar -C "$work" -cf - redis | xz -9 -T0 >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

fetch_wheels() {
  local dir=$1 package version
  local -a wanted=()
  [[ -x $VENV_PYTHON ]] || die "no $VENV_PYTHON; run make install first"
  mkdir -p "$dir"
  for package in "${WHEEL_PACKAGES[@]}"; do
    version="$("$VENV_PYTHON" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$package")"
    if ! compgen -G "$dir/${package//-/_}-$version-*.whl" >/dev/null; then
      wanted+=("$package==$version")
    fi
  done
  if ((${#wanted[@]})); then
    log "wheels: downloading ${wanted[*]}"
    "$VENV_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d "$dir" "${wanted[@]}" \
      || die "pip could not download ${wanted[*]} (offline? copy the wheels into $dir)"
  fi
  # What pip on the GPU machine will do, checked here for CPython 3.12.
  local check
  check="$(mktemp -d)"
  "$VENV_PYTHON" -m pip install --quiet --no-index --no-deps --no-compile \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --target "$check" "$dir"/*.whl \
    || die "the wheels in $dir do not install for CPython 3.12"
  rm -rf "$check"
}

write_manifest() {
  local dir=$1 file
  {
    printf 'torchkafka GPU bundle, built %s on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -m)"
    printf 'kafka %s; %s; %s\n' "$KAFKA_VERSION" \
      "$(tar -xJOf "$dir/jre.tar.xz" jre/release | sed -n 's/^JAVA_VERSION="\(.*\)"/java \1/p')" \
      "$(redis-server --version | cut -d' ' -f1-3)"
    printf 'jre modules: %s\n\n' "$JRE_MODULES"
    for file in "$dir"/*.tar.xz "$dir"/wheels/*.whl; do
      printf '%10d  %s  %s\n' "$(stat -c %s "$file")" "$(sha256sum "$file" | cut -c1-16)" "${file#"$dir"/}"
    done
    printf '%10d  total bytes\n' "$(du -cb "$dir"/*.tar.xz "$dir"/wheels/*.whl | tail -n 1 | cut -f1)"
  } >"$dir/MANIFEST.txt"
}

main() {
  local out="$REPO_ROOT/.gpu-bundle" force=0
  while (($#)); do
    case $1 in
      --out)
        (($# >= 2)) || usage_error "--out needs a folder"
        out="$(absolute_path "$2")"
        shift
        ;;
      --force) force=1 ;;
      -h | --help)
        usage
        return 0
        ;;
      *) usage_error "unexpected argument '$1'" ;;
    esac
    shift
  done
  [[ $(uname -m) == x86_64 ]] || die "the GPU machine is x86-64; build the bundle on an x86-64 machine"
  local started part
  started="$(now_ms)"
  mkdir -p "$out"
  take_lock "$out/.lock" # one build at a time
  if ((force)); then rm -f "$out"/*.tar.xz; fi
  for part in jre kafka-libs redis; do
    if [[ -f $out/$part.tar.xz ]]; then
      log "$part: kept $out/$part.tar.xz (--force rebuilds it)"
    else
      "build_${part//-/_}" "$out/$part.tar.xz"
    fi
  done
  fetch_wheels "$out/wheels"
  write_manifest "$out"
  cat "$out/MANIFEST.txt"
  log "Built $out in $(fmt_ms $(($(now_ms) - started)))"
}

main "$@"
