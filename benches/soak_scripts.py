#!/usr/bin/env python3
"""How much RSS do large EVAL bodies leave behind in slotway (issue 13, item 10)?

Starts `slotway local --replicas 0` from the binary it is given, with the slow log logging
every command (SLOTWAY_METRICS_SLOWLOG_THRESHOLD_US=0, so each EVAL gets an entry), then runs
--scripts distinct EVALs of --body-mib MiB each on one connection and records RSS: with the
client connected, after it has left, and after SCRIPT FLUSH; finally after malloc_trim(0)
(through gdb, when installed) to tell allocator retention from memory still referenced.

Before the byte bounds, 60 bodies of 2 MiB kept about +240 MiB after the client left and
+120 MiB after SCRIPT FLUSH (the slow log's entries were views into the request buffers).
Now the script cache keeps at most commands.script_cache_bytes (64 MiB by default) and the
slow log a few KiB per entry.

Usage: benches/soak_scripts.py --binary target/release/slotway [--scripts 60] [--body-mib 2]
Run it with the redis-py venv's python (/var/tmp/slotway-py/bin/python, tests/install-deps.sh).
"""

import argparse
import os
import sys
import tempfile
import time

import redis

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import Cluster, cleanup, command, fd_count, mib, poll, proc_status  # noqa: E402
from soak_retention import trim  # noqa: E402


def body(n, size):
    """A distinct script of `size` bytes returning n."""
    head = f"return {n} --"
    return head + "x" * (size - len(head))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True, help="a release build of slotway")
    ap.add_argument("--scripts", type=int, default=60)
    ap.add_argument("--body-mib", type=float, default=2.0)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    size = int(args.body_mib * (1 << 20))
    os.environ["SLOTWAY_METRICS_SLOWLOG_THRESHOLD_US"] = "0"
    workdir = tempfile.TemporaryDirectory(prefix="slotway-scripts-")
    log = open(os.path.join(workdir.name, "slotway.log"), "w")
    cluster = None
    try:
        cluster = Cluster(binary, workdir.name, log, replicas=0)
        cluster.wait_ready()
        pid, port = cluster.proc.pid, cluster.proxy_port
        base_fds = fd_count(pid)
        base, _ = proc_status(pid)
        print(f"baseline: RSS {mib(base):.1f} MiB")
        client = redis.Redis(port=port, socket_timeout=30)
        for n in range(args.scripts):
            got = client.eval(body(n, size), 0)
            if got != n:
                sys.exit(f"EVAL {n} returned {got!r}")
        connected, _ = proc_status(pid)
        client.close()
        poll("the client's descriptor to close", 30, 0.1, lambda: fd_count(pid) <= base_fds)
        time.sleep(1)  # the session drops its buffers as it ends; nothing exposes that moment
        left, _ = proc_status(pid)
        if command(port, "SCRIPT", "FLUSH") not in (b"OK", "OK", True):
            sys.exit("SCRIPT FLUSH failed")
        time.sleep(1)
        flushed, _ = proc_status(pid)
        print(f"{args.scripts} bodies of {args.body_mib:g} MiB, RSS over the baseline:")
        print(f"  client connected   {mib(connected - base):8.1f} MiB")
        print(f"  client gone        {mib(left - base):8.1f} MiB")
        print(f"  after SCRIPT FLUSH {mib(flushed - base):8.1f} MiB")
        if trim(pid):
            trimmed, _ = proc_status(pid)
            print(f"  after malloc_trim  {mib(trimmed - base):8.1f} MiB")
        else:
            print("  malloc_trim not run (gdb missing or the call failed)")
        return 0
    finally:
        cleanup(cluster, set(), log)
        workdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
