#!/bin/bash
# The test bed's stand-in for Apache ZooKeeper's bin/zkServer.sh (only the release tarball has
# that script, and it is not in a package registry): `start-foreground [CONFIG]` runs the quorum
# peer in the foreground with the jars of lib/, the configuration of $ZOOCFGDIR (or CONFIG) and
# JVMFLAGS/SERVER_JVMFLAGS, as the original does; logs go to the console.
set -euo pipefail

home="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
conf_dir="${ZOOCFGDIR:-$home/conf}"
if [[ "${1:-}" != start-foreground ]]; then
    echo "usage: zkServer.sh start-foreground [CONFIG] (the only command of this image)" >&2
    exit 2
fi
config="${2:-$conf_dir/zoo.cfg}"
# shellcheck disable=SC2086  # JVM flags are space-separated, as in the original script
exec java -Dzookeeper.log.dir="${ZOO_LOG_DIR:-$home/logs}" \
    -Dlogback.configurationFile="$conf_dir/logback.xml" \
    -XX:+ExitOnOutOfMemoryError ${SERVER_JVMFLAGS:-} ${JVMFLAGS:-} \
    -cp "$home/lib/*:$conf_dir" org.apache.zookeeper.server.quorum.QuorumPeerMain "$config"
