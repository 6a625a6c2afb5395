#!/usr/bin/env bash
# The main job on the local default, narrated: a 3-member etcd cluster is created (TLS and
# authentication on), given a user limited to one key prefix, written to through etcdctl with
# that user's certificate, scaled 3 -> 5 -> 3 live, loses a member to kill -9 and heals itself. The cluster keeps running
# afterwards; `quorumkeeper down demo --purge` removes it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
qk="$repo/.venv/bin/quorumkeeper"
etcdctl="$("$repo/.venv/bin/python" -c 'from quorumkeeper.runtimes.local import distributions as d; print(d.etcd_dir() / "etcdctl")')"
name="${1:-demo}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if "$qk" status "$name" >/dev/null 2>&1; then
    say "removing the previous $name cluster"
    "$qk" down "$name" --purge
fi

say "create a 3-member etcd cluster (it starts as one member and grows live)"
"$qk" up "$name" --store etcd --members 3

say "a user that may read and write greeting/ only, with its own client certificate"
"$qk" user add "$name" greeter --prefix greeting/
eval "$("$qk" connect "$name" --user greeter --env)"   # ETCDCTL_ENDPOINTS, _CACERT, _CERT, _KEY
say "write data through etcdctl as greeter ($ETCDCTL_ENDPOINTS)"
for n in 1 2 3; do "$etcdctl" put "greeting/$n" "hello $n"; done
say "outside its prefix the user is refused"
"$etcdctl" put "other/1" "x" || true

say "scale 3 -> 5: each new member joins as a learner and is promoted once caught up"
"$qk" scale "$name" 5
say "scale 5 -> 3: members leave the membership before their process stops"
"$qk" scale "$name" 3

victim="$("$qk" status "$name" -o json | "$repo/.venv/bin/python" -c \
    'import json, sys; m = [m for m in json.load(sys.stdin)["members"] if m["role"] == "follower"][0]; print(m["name"], m["pid"])')"
say "kill -9 ${victim% *} (pid ${victim#* }) and watch the keeper restart it"
kill -9 "${victim#* }"
"$qk" start "$name"

say "the data written before scaling and healing is all there"
"$etcdctl" get --prefix greeting/
"$qk" status "$name"
echo
echo "The cluster keeps running. Try: $qk logs $name ${victim% *}; $qk down $name --purge"
