"""Container init, run by the container runtime stand-in inside a pod's fresh PID, mount and UTS
namespaces: sets the hostname, bind-mounts volumes and the pod's resolv.conf/hosts, then execs
the container's command so it becomes PID 1 like in a real container.

Standard library only, run as a script: it starts before the container's command and must be fast.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    socket.sethostname(spec["hostname"])
    for mount in spec["mounts"]:
        subprocess.run(["mount", "--bind", mount["source"], mount["target"]], check=True)
        if mount["readOnly"]:
            subprocess.run(["mount", "-o", "remount,bind,ro", mount["target"]], check=True)
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
