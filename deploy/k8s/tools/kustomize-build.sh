#!/usr/bin/env bash
# Render a kustomization exactly as `kustomize build DIR` does, offline and
# without a kustomize or kubectl binary: a small Go program on the kustomize
# library itself (krusty, sigs.k8s.io/kustomize/api v0.21.2, pinned in
# kustomize-build/go.mod and go.sum), built on first use into .run/bin/ and
# reused while its sources are unchanged.
#
#   deploy/k8s/tools/kustomize-build.sh deploy/k8s/overlays/cpu > cpu.yaml
#
# Needs Go (1.26) and the Go module proxy on the first build only (about a
# minute on a fresh machine); later calls run the cached binary.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 KUSTOMIZATION_DIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
src="$here/kustomize-build"
run_dir="${TORCHKAFKA_RUN_DIR:-$root/.run}"
bin_dir="$run_dir/bin"

# The binary's name carries a hash of its sources, so an edit of main.go or a
# new pin in go.mod builds a new one; an unchanged tree reuses the last build.
digest="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)"
tool="$bin_dir/kustomize-build-$digest"

if [[ ! -x "$tool" ]]; then
    if ! command -v go > /dev/null; then
        echo "$0: go is not installed; it builds the pinned kustomize library once" >&2
        exit 127
    fi
    mkdir -p "$bin_dir"
    tmp="$(mktemp "$bin_dir/.kustomize-build.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    echo "building the pinned kustomize (first use; cached in $bin_dir)" >&2
    # go.sum is complete: -mod=mod only keeps an outside GOFLAGS (-mod=vendor)
    # from getting in the way. No workspace, no toolchain switch.
    (cd "$src" && GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 \
        go build -trimpath -o "$tmp" .)
    # Rename into place: a concurrent build of the same sources loses nothing.
    mv -f "$tmp" "$tool"
    trap - EXIT
    # Builds of earlier sources are not needed any more.
    find "$bin_dir" -maxdepth 1 -name 'kustomize-build-*' ! -name "${tool##*/}" -delete
fi

exec "$tool" "$1"
