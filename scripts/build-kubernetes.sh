#!/usr/bin/env bash
# Builds the Kubernetes test bed's binaries from upstream sources on the Go module proxy into a
# cache outside the repo, and installs the host tools the node agent needs.  Idempotent: a warm
# cache only checks that every binary is present.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet
#       -> ${CACHE}/kubernetes-${KUBERNETES_VERSION}/bin/   (one `go build` of the missing ones)
#   coredns (kubernetes plugin)   -> ${CACHE}/coredns-${COREDNS_VERSION}/bin/coredns
#   etcd (the API server's store) -> `quorumkeeper install etcd` (the project's pinned etcd)
# Versions are pinned in testbed/versions.env.  Usage: build-kubernetes.sh [COMPONENT...]
# The node runtime (containerd, runc, CNI) and images: scripts/build-node.sh (component "node").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../testbed/versions.env
source "${ROOT}/testbed/versions.env"
CACHE="${QUORUMKEEPER_CACHE_DIR:-${HOME}/.cache/quorumkeeper}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { echo "build-kubernetes: $*" >&2; }

install_host_tools() {
    # ip (netns, bridge, veth), nsenter/unshare/setpriv, mount and sysctl; only touch apt
    # when something is missing.
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v mount >/dev/null || missing+=(mount)
    command -v sysctl >/dev/null || missing+=(procps)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends "${missing[@]}"; }
    fi
}

# Runs a Go build at the lowest CPU priority: the machine is shared with timing-sensitive tests.
gobuild() { nice -n 19 "${GO}" build -trimpath "$@"; }

# Creates a throwaway wrapper module in $1 with go.mod contents $2 and resolves the packages $3...
wrapper_module() {
    local dir="$1" gomod="$2"
    shift 2
    rm -rf "${dir}" && mkdir -p "${dir}"
    printf '%s\n' "${gomod}" >"${dir}/go.mod"
    (cd "${dir}" && nice -n 19 "${GO}" get "$@")
}

build_etcd() {
    # The API server's store is quorumkeeper's own pinned etcd: one version, one recipe.
    "${ROOT}/.venv/bin/quorumkeeper" install etcd
}

build_kubernetes() {
    local dest="${CACHE}/kubernetes-${KUBERNETES_VERSION}"
    local b bins=()
    for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
        [[ -x "${dest}/bin/${b}" ]] || bins+=("${b}")
    done
    ((${#bins[@]})) || return 0
    log "building Kubernetes ${KUBERNETES_VERSION}: ${bins[*]}"
    local staging_version="v0.${KUBERNETES_VERSION#v1.}"
    local mod="${dest}.build" upstream
    mkdir -p "${CACHE}"
    # k8s.io/kubernetes replaces its staging modules with local paths; take that list from its
    # own go.mod and point each at the published module of the same release.
    local gomod
    gomod="$(cd "${CACHE}" && "${GO}" mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    upstream="$(cat "${gomod}")"
    local replaces
    replaces="$(grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' <<<"${upstream}" \
        | awk -v v="${staging_version}" '{print "\t" $1 " => " $1 " " v}')"
    [[ -n "${replaces}" ]] || { log "no staging modules found in k8s.io/kubernetes go.mod"; exit 1; }
    local pkgs=()
    for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
    local go_directive
    go_directive="$(grep -m1 '^go ' <<<"${upstream}")"
    wrapper_module "${mod}" \
        "$(printf 'module kubebuild\n\n%s\n\nreplace (\n%s\n)\n' "${go_directive}" "${replaces}")" \
        "${pkgs[@]/%/@${KUBERNETES_VERSION}}"
    local minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    local vpkg=k8s.io/component-base/version
    local ldflags="-s -w -X ${vpkg}.gitVersion=${KUBERNETES_VERSION} -X ${vpkg}.gitMajor=1"
    ldflags+=" -X ${vpkg}.gitMinor=${minor} -X ${vpkg}.gitTreeState=clean"
    ldflags+=" -X ${vpkg}.buildDate=1970-01-01T00:00:00Z"
    # One invocation so the binaries share compiled packages.
    (cd "${mod}" && gobuild -ldflags "${ldflags}" -o bin/ "${pkgs[@]}")
    mkdir -p "${dest}/bin"
    for b in "${bins[@]}"; do mv "${mod}/bin/${b}" "${dest}/bin/${b}"; done
    rm -rf "${mod}"
}

build_coredns() {
    local dest="${CACHE}/coredns-${COREDNS_VERSION}"
    [[ -x "${dest}/bin/coredns" ]] && return
    log "building CoreDNS ${COREDNS_VERSION}"
    local mod="${dest}.build"
    wrapper_module "${mod}" "module corednsbuild" "github.com/coredns/coredns@${COREDNS_VERSION}"
    # CoreDNS's own main links every plugin (and the cloud SDKs behind some); cluster DNS needs
    # only these, registered the way an external-plugin build does it.
    cat >"${mod}/main.go" <<'GO'
// Command coredns is CoreDNS with the plugins the test bed's cluster DNS uses.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
    (cd "${mod}" && nice -n 19 "${GO}" mod tidy && gobuild -ldflags "-s -w" -o bin/coredns .)
    mkdir -p "${dest}/bin"
    mv "${mod}/bin/coredns" "${dest}/bin/coredns"
    rm -rf "${mod}"
}

build_node() {
    # After etcd and kubelet: the etcd image carries the pinned etcd, the CSI stubs come from
    # the modules kubelet is built with.
    bash "${ROOT}/scripts/build-node.sh"
}

install_host_tools
# Components may be named to build only those: kubernetes, etcd, coredns, node (default: all).
components=("$@")
((${#components[@]})) || components=(kubernetes etcd coredns node)
for component in "${components[@]}"; do "build_${component}"; done
log "ready under ${CACHE}"
