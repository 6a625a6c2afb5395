#!/usr/bin/env bash
# Installs Debian's Ceph packages for the `ceph` test suite and makes Debian's
# rados/rbd Python modules importable from the project's venv.
#
# Idempotent: packages already present are left alone, the .pth link is rewritten.
# Usage: scripts/install-ceph.sh [VENV]   (VENV defaults to <repo>/.venv)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv}"
packages=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd rbd-fuse fuse3 e2fsprogs)

# shellcheck source=lib.sh
source "$repo/scripts/lib.sh"
apt_install "${packages[@]}"

# The venv's Python is not Debian's, so Debian's dist-packages is not on its path.
# Exposing only the two extension modules (not all of dist-packages) keeps other
# Debian Python packages from shadowing the venv's pinned ones.
if [[ -x "$venv/bin/python" ]]; then
    shim="$venv/debian-ceph"
    mkdir -p "$shim"
    for mod in rados rbd; do
        so="$(find /usr/lib/python3/dist-packages -maxdepth 1 -name "$mod.cpython-*.so" | head -n1)"
        if [[ -z "$so" ]]; then
            echo "install-ceph: $mod extension module not found in /usr/lib/python3/dist-packages" >&2
            exit 1
        fi
        ln -sfn "$so" "$shim/$(basename "$so")"
    done
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$shim" >"$site/debian-ceph.pth"
    if "$venv/bin/python" -c 'import rados, rbd' 2>/dev/null; then
        echo "install-ceph: rados/rbd importable from $venv"
    else
        echo "install-ceph: rados/rbd not importable from $venv (Python ABI mismatch?);" \
            "the CLI-based code paths still work" >&2
    fi
else
    echo "install-ceph: no venv at $venv, skipped the rados/rbd .pth link"
fi

ceph --version
