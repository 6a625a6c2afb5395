"""ZooKeeper: its ensemble's membership (`ensemble`), each server's own account of itself
(`words`), the membership client (`client`), what a server is started with (`config`) and how
its data on disk reads (`files`)."""
