"""etcd: the membership client over its v3 JSON gateway (`client`), its answers mapped to our
errors (`errors`), what a member is started with (`config`) and how its WAL reads (`wal`)."""
