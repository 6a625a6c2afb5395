#!/usr/bin/env bash
# Builds what a test-bed node runs besides kubelet (scripts/build-kubernetes.sh builds that) into
# the cache outside the repo.  Idempotent: a warm cache only checks that every file is present.
#
#   containerd, containerd-shim-runc-v2, ctr -> ${CACHE}/containerd-${CONTAINERD_VERSION}/bin/
#   runc (cgo, seccomp)                      -> ${CACHE}/runc-${RUNC_VERSION}/bin/runc
#   CNI plugins (bridge, host-local, loopback) <- Debian's containernetworking-plugins
#   OCI image archives, imported into every node's containerd by testbed/node.py:
#     registry.k8s.io/pause:${PAUSE_VERSION}  -> ${CACHE}/images/pause-${PAUSE_VERSION}.tar
#     docker.io/library/busybox:${BUSYBOX_VERSION} -> ${CACHE}/images/busybox-${BUSYBOX_VERSION}.tar
# Versions are pinned in testbed/versions.env.  Usage: build-node.sh [COMPONENT...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../testbed/versions.env
source "${ROOT}/testbed/versions.env"
# shellcheck source=lib.sh
source "${ROOT}/scripts/lib.sh"
CACHE="${QUORUMKEEPER_CACHE_DIR:-${HOME}/.cache/quorumkeeper}"
IMAGES="${CACHE}/images"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
PYTHON="${ROOT}/.venv/bin/python"
export GOFLAGS=-buildvcs=false

log() { echo "build-node: $*" >&2; }

# Runs a Go build at the lowest CPU priority: the machine is shared with timing-sensitive tests.
gobuild() { nice -n 19 "${GO}" build -trimpath "$@"; }

# Creates a throwaway wrapper module in $1 and resolves the packages $2... (package@version).
wrapper_module() {
    local dir="$1"
    shift
    rm -rf "${dir}" && mkdir -p "${dir}"
    printf 'module nodebuild\n' >"${dir}/go.mod"
    (cd "${dir}" && nice -n 19 "${GO}" get "$@")
}

build_containerd() {
    local dest="${CACHE}/containerd-${CONTAINERD_VERSION}" mod b
    local bins=(containerd containerd-shim-runc-v2 ctr) missing=0
    for b in "${bins[@]}"; do [[ -x "${dest}/bin/${b}" ]] || missing=1; done
    ((missing)) || return 0
    log "building containerd ${CONTAINERD_VERSION}"
    mod="${dest}.build"
    local module=github.com/containerd/containerd/v2
    local pkgs=() ldflags="-s -w -X ${module}/version.Version=${CONTAINERD_VERSION}"
    for b in "${bins[@]}"; do pkgs+=("${module}/cmd/${b}"); done
    wrapper_module "${mod}" "${pkgs[@]/%/@${CONTAINERD_VERSION}}"
    # Static and without the btrfs snapshotter (its cgo headers are not installed); the nodes use
    # overlayfs.
    (cd "${mod}" && CGO_ENABLED=0 gobuild -tags no_btrfs -ldflags "${ldflags}" -o bin/ "${pkgs[@]}")
    mkdir -p "${dest}/bin"
    for b in "${bins[@]}"; do mv "${mod}/bin/${b}" "${dest}/bin/${b}"; done
    rm -rf "${mod}"
}

build_runc() {
    local dest="${CACHE}/runc-${RUNC_VERSION}"
    [[ -x "${dest}/bin/runc" ]] && return
    log "building runc ${RUNC_VERSION}"
    apt_install libseccomp-dev pkg-config gcc libc6-dev
    local mod="${dest}.build"
    wrapper_module "${mod}" "github.com/opencontainers/runc@${RUNC_VERSION}"
    # runc needs cgo (its nsenter C code runs before the Go runtime) and seccomp for the
    # RuntimeDefault profile kubelet may ask for.
    (cd "${mod}" && CGO_ENABLED=1 gobuild -tags seccomp \
        -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" -o bin/runc github.com/opencontainers/runc)
    mkdir -p "${dest}/bin"
    mv "${mod}/bin/runc" "${dest}/bin/runc"
    rm -rf "${mod}"
}

build_cni() {
    apt_install containernetworking-plugins
}

# image NAME FILE [ociimage options...]: writes FILE unless it exists.
image() {
    local name="$1" file="${IMAGES}/$2"
    shift 2
    [[ -f "${file}" ]] && return
    log "building image ${name}"
    mkdir -p "${IMAGES}"
    (cd "${ROOT}" && "${PYTHON}" -m testbed.ociimage --name "${name}" --output "${file}" "$@")
}

build_pause() {
    local file="pause-${PAUSE_VERSION}.tar"
    [[ -f "${IMAGES}/${file}" ]] && return
    apt_install gcc libc6-dev
    local source dir
    source="$(cd "${CACHE}" && "${GO}" mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/build/pause/linux/pause.c"
    dir="$(mktemp -d)"
    mkdir -p "${dir}/rootfs"
    # As build/pause/Makefile compiles it: static, optimized, stripped, with the version string.
    gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}" -o "${dir}/rootfs/pause" "${source}"
    strip "${dir}/rootfs/pause"
    image "registry.k8s.io/pause:${PAUSE_VERSION}" "${file}" --layer "${dir}/rootfs" \
        --entrypoint '["/pause"]' --user 65535:65535 --env PATH=/
    rm -rf "${dir}"
}

build_busybox() {
    local file="busybox-${BUSYBOX_VERSION}.tar"
    [[ -f "${IMAGES}/${file}" ]] && return
    apt_install busybox-static
    local installed
    installed="$(dpkg-query -W -f='${Version}' busybox-static)"
    [[ "${installed}" == *":${BUSYBOX_VERSION}-"* ]] || {
        log "busybox-static ${installed} is not the pinned ${BUSYBOX_VERSION}"
        exit 1
    }
    local dir applet
    dir="$(mktemp -d)"
    # The upstream image's layout: one static busybox in /bin, every applet a hard link to it,
    # root and nobody in /etc/passwd, a sticky /tmp.
    mkdir -p "${dir}/bin" "${dir}/etc" "${dir}/root" "${dir}/tmp" "${dir}/var/spool/mail" \
        "${dir}/var/www" "${dir}/home" "${dir}/usr/sbin"
    chmod 1777 "${dir}/tmp"
    cp /bin/busybox "${dir}/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ "${applet}" == busybox ]] || ln "${dir}/bin/busybox" "${dir}/bin/${applet}"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' \
        >"${dir}/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"${dir}/etc/group"
    image "docker.io/library/busybox:${BUSYBOX_VERSION}" "${file}" --layer "${dir}" \
        --cmd '["sh"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "${dir}"
}

# Components may be named to build only those (default: all).
components=("$@")
((${#components[@]})) || components=(containerd runc cni pause busybox)
for component in "${components[@]}"; do "build_${component}"; done
log "ready under ${CACHE}"
