#!/usr/bin/env python3
"""Is the RSS slotway keeps after abandoned large requests a leak or allocator retention?

Starts `slotway local --replicas 0` from a release binary it is given, then runs --rounds
rounds of: --clients connections each announcing a 512 MiB bulk (`SET huge:N <$536870912>`)
and sending 512 bytes of it, all held open, then all closed. After each round it waits until
slotway's descriptor count is back to its baseline and records RSS. Finally it asks glibc to
hand free memory back (`malloc_trim(0)` called through gdb, when gdb is installed) and records
RSS once more.

Reading the result: a leak grows with every round; allocator retention rises in the first round
and then stays flat (later rounds reuse the memory the first one freed), and `malloc_trim`
gives most of it back.

Usage: benches/soak_retention.py --binary target/release/slotway [--rounds 4] [--clients 2000]
Run it with the redis-py venv's python (/var/tmp/slotway-py/bin/python, tests/install-deps.sh).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import Cluster, cleanup, fd_count, mib, poll, proc_status  # noqa: E402


def announce(port, clients):
    """Opens `clients` connections, each announcing 512 MiB and sending 512 bytes of it."""
    socks = []
    for i in range(clients):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(f"*3\r\n$3\r\nSET\r\n$8\r\nhuge:{i % 1000:03}\r\n$536870912\r\n".encode() + b"z" * 512)
        socks.append(s)
    return socks


def trim(pid):
    """Calls malloc_trim(0) inside slotway through gdb; False when gdb is missing or fails."""
    if shutil.which("gdb") is None:
        return False
    out = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (int) malloc_trim(0)"],
        capture_output=True, text=True, timeout=120,
    )
    return out.returncode == 0 and "$1 =" in out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True, help="a release build of slotway")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=2000)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    workdir = tempfile.TemporaryDirectory(prefix="slotway-retention-")
    log = open(os.path.join(workdir.name, "slotway.log"), "w")
    cluster = None
    try:
        cluster = Cluster(binary, workdir.name, log, replicas=0)
        cluster.wait_ready()
        pid, port = cluster.proc.pid, cluster.proxy_port
        time.sleep(2)
        base_fds = fd_count(pid)
        base_rss, _ = proc_status(pid)
        print(f"baseline: RSS {mib(base_rss):.1f} MiB, {base_fds} descriptors")
        print(f"{'round':>5} {'RSS held MiB':>13} {'RSS after MiB':>14} {'fds after':>10}")
        for n in range(1, args.rounds + 1):
            socks = announce(port, args.clients)
            poll("slotway to accept every client", 60, 0.1,
                 lambda: fd_count(pid) >= base_fds + args.clients)
            time.sleep(0.5)  # each session reads the 512 bytes after accepting; nothing polls that
            held, _ = proc_status(pid)
            for s in socks:
                s.close()
            poll("descriptors back to the baseline", 60, 0.1,
                 lambda: fd_count(pid) <= base_fds + 2)
            time.sleep(1)
            after, _ = proc_status(pid)
            print(f"{n:>5} {mib(held):>13.1f} {mib(after):>14.1f} {fd_count(pid):>10}", flush=True)
        if trim(pid):
            trimmed, _ = proc_status(pid)
            print(f"after malloc_trim(0): RSS {mib(trimmed):.1f} MiB "
                  f"(baseline {mib(base_rss):.1f} MiB)")
        else:
            print("malloc_trim not run (gdb missing or the call failed)")
        return 0
    finally:
        cleanup(cluster, set(), log)
        workdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
