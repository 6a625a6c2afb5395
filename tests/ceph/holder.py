"""A client that opens an RBD image, takes its lock and keeps watching it until killed.

Run as a separate process so a test can SIGKILL it, like a node that died mid-flight.
Usage: python holder.py MON USER KEY POOL IMAGE COOKIE; prints its address once locked.
"""

import sys

import rados  # type: ignore[import-not-found]
import rbd  # type: ignore[import-not-found]

mon, user, key, pool, image, cookie = sys.argv[1:7]
conn = rados.Rados(conffile="/dev/null", rados_id=user, conf={"mon_host": mon, "key": key})
conn.connect(timeout=10)
ioctx = conn.open_ioctx(pool)
img = rbd.Image(ioctx, image)
img.lock_exclusive(cookie)
print(conn.get_addrs(), flush=True)
sys.stdin.read()  # hold until killed or stdin closes
img.unlock(cookie)
img.close()
conn.shutdown()
