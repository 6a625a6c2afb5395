"""A Ceph client that opens an RBD image, takes its exclusive advisory lock and holds it.

Its own process, so it can die like a node: SIGKILL leaves the lock on the image and a
watcher that lingers until Ceph times it out, exactly what fencing has to deal with. Used
by the test bed's ceph-csi stand-in (:mod:`testbed.cephcsi`) and the Ceph tests.

Usage: python rbd_holder.py MONS USER KEY POOL IMAGE COOKIE.  Prints the client's address once
the lock is held, then holds it until it reads ``release`` (then unlocks and exits 0).  If
stdin closes first, its parent died: it exits at once without a goodbye, like SIGKILL (the
kernel closes the pipe before it delivers the parent-death signal, so waiting for that signal
could let the holder unlock first).  If another client holds the lock, prints who to stderr
and exits 16 (EBUSY).
"""

import os
import sys

import rados  # type: ignore[import-not-found]
import rbd  # type: ignore[import-not-found]

EBUSY = 16

mons, user, key, pool, image, cookie = sys.argv[1:7]
conn = rados.Rados(
    conffile="/dev/null",
    rados_id=user,
    conf={"mon_host": mons, "key": key, "rados_osd_op_timeout": "10", "rados_mon_op_timeout": "10"},
)
conn.connect(timeout=10)
try:
    with conn.open_ioctx(pool) as ioctx, rbd.Image(ioctx, image) as img:
        try:
            img.lock_exclusive(cookie)
        except (rbd.ImageBusy, rbd.ImageExists):
            holders = ", ".join(
                f"{client} (cookie {held!r}) at {address}"
                for client, held, address in (img.list_lockers() or {"lockers": []})["lockers"]
            )
            print(f"rbd image {pool}/{image} is locked by {holders}", file=sys.stderr)
            sys.exit(EBUSY)
        print(conn.get_addrs(), flush=True)
        if sys.stdin.readline().strip() != "release":
            os._exit(1)
        img.unlock(cookie)
finally:
    conn.shutdown()
