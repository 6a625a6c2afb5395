"""Run the test bed by hand: ``python -m testbed [--nodes N] [--state-dir DIR]``.

Prints the admin kubeconfig path, keeps the cluster up until Ctrl-C or SIGTERM, then stops it.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import time
from pathlib import Path

from testbed.cluster import Cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="qk-testbed-"))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    started = time.monotonic()
    with Cluster(state_dir, node_count=args.nodes) as cluster:
        print(f"up in {time.monotonic() - started:.1f}s", flush=True)
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
