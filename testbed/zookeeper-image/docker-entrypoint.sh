#!/bin/bash
# The test bed's entrypoint of the ZooKeeper image, keeping the contract of the official image's
# (docker-library "zookeeper"): ZOO_* variables describe zoo.cfg when $ZOO_CONF_DIR has none,
# ZOO_MY_ID becomes $ZOO_DATA_DIR/myid when that is missing, and a server started as root drops
# to the zookeeper user after taking ownership of its data and log folders.
set -euo pipefail

if [[ "${1:-}" == zkServer.sh && "$(id -u)" == 0 ]]; then
    chown -R zookeeper:zookeeper "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR" "$ZOO_LOG_DIR"
    exec gosu zookeeper "$0" "$@"
fi

config="$ZOO_CONF_DIR/zoo.cfg"
if [[ ! -f "$config" ]]; then
    settings=(
        "dataDir=$ZOO_DATA_DIR"
        "dataLogDir=$ZOO_DATA_LOG_DIR"
        "tickTime=$ZOO_TICK_TIME"
        "initLimit=$ZOO_INIT_LIMIT"
        "syncLimit=$ZOO_SYNC_LIMIT"
        "autopurge.snapRetainCount=$ZOO_AUTOPURGE_SNAPRETAINCOUNT"
        "autopurge.purgeInterval=$ZOO_AUTOPURGE_PURGEINTERVAL"
        "maxClientCnxns=$ZOO_MAX_CLIENT_CNXNS"
        "standaloneEnabled=$ZOO_STANDALONE_ENABLED"
        "admin.enableServer=$ZOO_ADMINSERVER_ENABLED"
    )
    # Word splitting is the contract: ZOO_SERVERS and ZOO_CFG_EXTRA are space-separated.
    # shellcheck disable=SC2206
    settings+=(${ZOO_SERVERS:-server.1=localhost:2888:3888;2181})
    if [[ -n "${ZOO_4LW_COMMANDS_WHITELIST:-}" ]]; then
        settings+=("4lw.commands.whitelist=$ZOO_4LW_COMMANDS_WHITELIST")
    fi
    # shellcheck disable=SC2206
    settings+=(${ZOO_CFG_EXTRA:-})
    printf '%s\n' "${settings[@]}" >>"$config"
fi

if [[ ! -f "$ZOO_DATA_DIR/myid" ]]; then
    echo "${ZOO_MY_ID:-1}" >"$ZOO_DATA_DIR/myid"
fi

exec "$@"
