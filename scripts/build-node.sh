#!/usr/bin/env bash
# Builds what a test-bed node runs besides kubelet (scripts/build-kubernetes.sh builds that) into
# the cache outside the repo.  Idempotent: a warm cache only checks that every file is present.
#
#   containerd, containerd-shim-runc-v2, ctr -> ${CACHE}/containerd-${CONTAINERD_VERSION}/bin/
#   runc (cgo, seccomp)                      -> ${CACHE}/runc-${RUNC_VERSION}/bin/runc
#   CNI plugins (bridge, host-local, loopback) <- Debian's containernetworking-plugins
#   etcdutl of quorumkeeper's pinned etcd   -> ${CACHE}/etcdutl-v${ETCD}/bin/etcdutl
#   Debian root file system (mmdebstrap)     -> ${CACHE}/images/debian-${DEBIAN_SUITE}-rootfs.tar
#   OCI image archives (testbed/versions.py names them), in ${CACHE}/images/:
#     registry.k8s.io/pause, docker.io/library/busybox, quay.io/coreos/etcd (also
#     gcr.io/etcd-development/etcd), docker.io/library/zookeeper (the pinned release of each
#     store and the previous one, for upgrades), docker.io/quorumkeeper/testbed-toolbox
#   the nodes' image store, every archive imported once, earlier builds removed
#   (testbed/imagestore.py)
#   Python gRPC stubs of the CSI spec and kubelet's plugin registration API, both at the versions
#   kubelet is built with             -> ${CACHE}/csi-proto-${KUBERNETES_VERSION}/
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
# Names and files of the images, computed where the test bed reads them.
eval "$(cd "${ROOT}" && "${PYTHON}" -m testbed.versions)"
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

# image FILE [ociimage options...]: writes the archive FILE (a path) unless it exists.
image() {
    local file="$1"
    shift
    [[ -f "${file}" ]] && return
    log "building image ${file##*/}"
    mkdir -p "${IMAGES}"
    (cd "${ROOT}" && "${PYTHON}" -m testbed.ociimage --output "${file}" "$@")
}

build_pause() {
    [[ -f "${PAUSE_ARCHIVE}" ]] && return
    apt_install gcc libc6-dev
    local source dir
    source="$(cd "${CACHE}" && "${GO}" mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/build/pause/linux/pause.c"
    dir="$(mktemp -d)"
    mkdir -p "${dir}/rootfs"
    # As build/pause/Makefile compiles it: static, optimized, stripped, with the version string.
    gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}" -o "${dir}/rootfs/pause" "${source}"
    strip "${dir}/rootfs/pause"
    image "${PAUSE_ARCHIVE}" --name "${PAUSE_IMAGE}" --layer "${dir}/rootfs" \
        --entrypoint '["/pause"]' --user 65535:65535 --env PATH=/
    rm -rf "${dir}"
}

build_busybox() {
    [[ -f "${BUSYBOX_ARCHIVE}" ]] && return
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
    image "${BUSYBOX_ARCHIVE}" --name "${BUSYBOX_IMAGE}" --layer "${dir}" \
        --cmd '["sh"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "${dir}"
}

build_etcdutl() {
    [[ -x "${ETCDUTL}" ]] && return
    log "building etcdutl v${ETCD_VERSION}"
    local mod="${ETCDUTL%/bin/etcdutl}.build"
    wrapper_module "${mod}" "go.etcd.io/etcd/etcdutl/v3@v${ETCD_VERSION}"
    (cd "${mod}" && CGO_ENABLED=0 gobuild -ldflags "-s -w" -o bin/etcdutl go.etcd.io/etcd/etcdutl/v3)
    mkdir -p "${ETCDUTL%/etcdutl}"
    mv "${mod}/bin/etcdutl" "${ETCDUTL}"
    rm -rf "${mod}"
}

build_debian() {
    [[ -f "${DEBIAN_ROOTFS}" ]] && return
    log "building the Debian ${DEBIAN_SUITE} root file system with ${DEBIAN_PACKAGES}"
    apt_install mmdebstrap
    mkdir -p "${IMAGES}"
    # Without documentation, manual pages and translations, as Debian's own slim images; the
    # JRE's maintainer script still links a manual page into man1, so that folder must exist.
    nice -n 19 mmdebstrap --quiet --format=tar --variant=minbase --include="${DEBIAN_PACKAGES}" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --essential-hook='mkdir -p "$1/usr/share/man/man1"' \
        "${DEBIAN_SUITE}" "${DEBIAN_ROOTFS}.partial"
    mv "${DEBIAN_ROOTFS}.partial" "${DEBIAN_ROOTFS}"
}

# The image of each etcd release the test bed runs: the pinned one and the one the upgrade tests
# start from.
build_etcd_image() {
    local version
    for version in "${ETCD_VERSION}" "${ETCD_PREVIOUS_VERSION}"; do etcd_image "${version}"; done
}

# etcd_image VERSION: the upstream image's layout (etcd's Dockerfile): distroless static (root and
# nonroot users, CA certificates, /tmp), the binaries in /usr/local/bin, working dirs /var/etcd
# and /var/lib/etcd, ports 2379 and 2380, etcd as the default command, and no shell. etcdutl is
# built for the pinned release only; an older release's image goes without it.
etcd_image() {
    local key="${1//./_}" dir b
    local archive_var="ETCD_ARCHIVE_${key}" dir_var="ETCD_DIR_${key}" images_var="ETCD_IMAGES_${key}"
    [[ -f "${!archive_var}" ]] && return
    [[ -x "${!dir_var}/etcd" ]] || "${ROOT}/.venv/bin/quorumkeeper" install etcd --version "$1"
    dir="$(mktemp -d)"
    mkdir -p "${dir}/usr/local/bin" "${dir}/etc/ssl/certs" "${dir}/tmp" "${dir}/var/etcd" \
        "${dir}/var/lib/etcd" "${dir}/home/nonroot" "${dir}/root"
    chmod 1777 "${dir}/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"${dir}/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"${dir}/etc/group"
    cp /etc/ssl/certs/ca-certificates.crt "${dir}/etc/ssl/certs/"
    for b in etcd etcdctl; do cp "${!dir_var}/${b}" "${dir}/usr/local/bin/"; done
    if [[ "$1" == "${ETCD_VERSION}" ]]; then cp "${ETCDUTL}" "${dir}/usr/local/bin/"; fi
    local names=() name
    for name in ${!images_var}; do names+=(--name "${name}"); done
    image "${!archive_var}" "${names[@]}" --layer "${dir}" --cmd '["/usr/local/bin/etcd"]' \
        --workdir /var/lib/etcd/ --expose 2379/tcp --expose 2380/tcp \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    rm -rf "${dir}"
}

build_toolbox() {
    [[ -f "${TOOLBOX_ARCHIVE}" ]] && return
    local dir
    dir="$(mktemp -d)"
    mkdir -p "${dir}/usr/local/bin"
    { echo '#!/usr/bin/python3'; cat "${ROOT}/testbed/toolbox.py"; } >"${dir}/usr/local/bin/toolbox"
    chmod 755 "${dir}/usr/local/bin/toolbox"
    image "${TOOLBOX_ARCHIVE}" --name "${TOOLBOX_IMAGE}" --layer "${DEBIAN_ROOTFS}" \
        --layer "${dir}" --entrypoint '["/usr/local/bin/toolbox"]' \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "${dir}"
}

build_csi_proto() {
    local dest="${CACHE}/csi-proto-${KUBERNETES_VERSION}"
    [[ -f "${dest}/csi_pb2_grpc.py" ]] && return
    log "compiling the CSI and plugin registration protocols"
    local kube_dir spec_version spec_dir kubelet_dir staging_version="v0.${KUBERNETES_VERSION#v1.}"
    kube_dir="$(module_dir "k8s.io/kubernetes@${KUBERNETES_VERSION}")"
    spec_version="$(awk '$1 == "github.com/container-storage-interface/spec" {print $2; exit}' \
        "${kube_dir}/go.mod")"
    spec_dir="$(module_dir "github.com/container-storage-interface/spec@${spec_version}")"
    kubelet_dir="$(module_dir "k8s.io/kubelet@${staging_version}")"
    local work
    work="$(mktemp -d)"
    cp "${spec_dir}/csi.proto" "${work}/csi.proto"
    cp "${kubelet_dir}/pkg/apis/pluginregistration/v1/api.proto" "${work}/pluginregistration.proto"
    (cd "${work}" && "${PYTHON}" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
        csi.proto pluginregistration.proto)
    rm -rf "${dest}" && mkdir -p "${dest}"
    mv "${work}"/*_pb2*.py "${dest}/"
    rm -rf "${work}"
}

# module_dir MODULE@VERSION: the module's folder in Go's module cache (downloaded if missing).
module_dir() {
    (cd "${CACHE}" && "${GO}" mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

# The image of each ZooKeeper release the test bed runs, as for etcd.
build_zookeeper_image() {
    local version
    for version in "${ZOOKEEPER_VERSION}" "${ZOOKEEPER_PREVIOUS_VERSION}"; do
        zookeeper_image "${version}"
    done
}

zookeeper_image() {
    local key="${1//./_}"
    local archive_var="ZOOKEEPER_ARCHIVE_${key}" lib_var="ZOOKEEPER_LIB_${key}"
    local image_var="ZOOKEEPER_IMAGE_${key}"
    [[ -f "${!archive_var}" ]] && return
    [[ -d "${!lib_var}" ]] || "${ROOT}/.venv/bin/quorumkeeper" install zookeeper --version "$1"
    local dir home="apache-zookeeper-$1-bin" source="${ROOT}/testbed/zookeeper-image"
    dir="$(mktemp -d)"
    # The official image's layout (docker-library "zookeeper"): the release in /${home} with its
    # bin/ on PATH, configuration in /conf, data in /data and /datalog, logs in /logs, all owned
    # by zookeeper (1000:1000), /docker-entrypoint.sh as entrypoint, zkServer.sh as command.
    mkdir -p "${dir}/${home}/bin" "${dir}/${home}/lib" "${dir}/conf" "${dir}/data" \
        "${dir}/datalog" "${dir}/logs" "${dir}/etc"
    cp "${!lib_var}"/*.jar "${dir}/${home}/lib/"
    install -m 755 "${source}/zkServer.sh" "${dir}/${home}/bin/zkServer.sh"
    install -m 755 "${source}/docker-entrypoint.sh" "${dir}/docker-entrypoint.sh"
    cp "${source}/logback.xml" "${dir}/conf/"
    tar -xf "${DEBIAN_ROOTFS}" -C "${dir}" ./etc/passwd ./etc/group
    echo 'zookeeper:x:1000:1000::/home/zookeeper:/bin/sh' >>"${dir}/etc/passwd"
    echo 'zookeeper:x:1000:' >>"${dir}/etc/group"
    chown -R 1000:1000 "${dir}/${home}" "${dir}/conf" "${dir}/data" "${dir}/datalog" "${dir}/logs"
    local env=(ZOO_CONF_DIR=/conf ZOO_DATA_DIR=/data ZOO_DATA_LOG_DIR=/datalog ZOO_LOG_DIR=/logs
        ZOO_TICK_TIME=2000 ZOO_INIT_LIMIT=5 ZOO_SYNC_LIMIT=2 ZOO_AUTOPURGE_PURGEINTERVAL=0
        ZOO_AUTOPURGE_SNAPRETAINCOUNT=3 ZOO_MAX_CLIENT_CNXNS=60 ZOO_STANDALONE_ENABLED=true
        ZOO_ADMINSERVER_ENABLED=true ZOOCFGDIR=/conf
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/${home}/bin"
        JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64)
    local args=() setting port
    for setting in "${env[@]}"; do args+=(--env "${setting}"); done
    for port in 2181 2888 3888 8080; do args+=(--expose "${port}/tcp"); done
    image "${!archive_var}" --name "${!image_var}" --layer "${DEBIAN_ROOTFS}" \
        --layer "${dir}" --keep-owners "${args[@]}" --workdir "/${home}" \
        --entrypoint '["/docker-entrypoint.sh"]' --cmd '["zkServer.sh", "start-foreground"]'
    rm -rf "${dir}"
}

build_store() {
    (cd "${ROOT}" && "${PYTHON}" -m testbed.imagestore)
}

# Components may be named to build only those (default: all, in this order).
components=("$@")
((${#components[@]})) || components=(containerd runc cni pause busybox etcdutl debian etcd_image
    toolbox zookeeper_image store csi_proto)
for component in "${components[@]}"; do "build_${component}"; done
log "ready under ${CACHE}"
