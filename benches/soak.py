#!/usr/bin/env python3
"""Bounded soak: slotway in front of a 9-node cluster under mixed load, a primary killed half way.

Starts `slotway local` (3 shards x primary + 2 replicas, appendonly, cluster-node-timeout 2000)
from a release binary it is given (it builds nothing), runs a mixed load through the proxy for
--minutes, SIGKILLs the primary of slot 0 half way, and every --interval seconds samples
slotway's RSS, its open descriptors (/proc/PID/fd), requests done and client-visible errors by
kind. Prints a table over time and a summary: RSS idle/peak/end, descriptors before, during and
after the load, errors by kind, and whether the proxy followed the failover.

The load (all through the proxy, all on loopback):
  getset    threads doing SET then GET of their own keys, checking the value read back
  multi     MSET of 6 keys in different slots, then MGET of them, checked
  pipeline  pipelines of 16 SET + 16 GET, checked
  pubsub    one subscriber, one publisher numbering its messages; gaps are counted
  churn     connections opened and dropped: a PING, a half-sent request, or nothing at all
  benchmark redis-benchmark (-c 10 -P 8, SET/GET/INCR/MSET), in bounded batches

A write that fails may or may not have been applied, so its key is not checked afterwards.
The load threads live in soak_load.py.

Usage: benches/soak.py --binary target/release/slotway [--minutes 10] [--interval 5]
Needs redis-server, redis-benchmark (tests/install-deps.sh) and redis-py (the venv
/var/tmp/slotway-py that tests/install-deps.sh creates: run this with its python). Every loop is
bounded in count and time; every process started is stopped by PID on exit, Ctrl-C included.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import free_base, free_port  # noqa: E402

try:
    import redis
except ImportError:
    sys.exit("redis-py is missing: run with /var/tmp/slotway-py/bin/python (tests/install-deps.sh)")

from soak_load import (  # noqa: E402
    OP_TIMEOUT, PubSub, Stats, benchmark_worker, churn_worker, client, getset_worker, key_slot,
    multi_worker, pipeline_worker,
)


# ---------------------------------------------------------------- small helpers


def key_in_slots(prefix, lo, hi):
    """A key named prefix + n whose slot lies in [lo, hi]."""
    for n in range(100000):
        key = f"{prefix}{n}"
        if lo <= key_slot(key) <= hi:
            return key
    raise RuntimeError(f"no key for slots {lo}-{hi}")


def proc_status(pid):
    """(VmRSS, VmHWM) in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def command(port, *args, timeout=2.0):
    """One command on a fresh connection to 127.0.0.1:port, decoded by redis-py."""
    client = redis.Redis(port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def poll(what, timeout, step, check):
    """Calls check() every `step` s until it returns a truthy value or `timeout` s pass."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            got = check()
            if got:
                return got
        except (OSError, redis.RedisError) as e:
            last = e
        time.sleep(step)
    raise TimeoutError(f"{what} not within {timeout:.0f} s (last error: {last})")


# ---------------------------------------------------------------- the cluster


class Cluster:
    """`slotway local` and what the soak needs to know about its nodes."""

    def __init__(self, binary, workdir, log, replicas=2):
        nodes = 3 * (1 + replicas)
        self.base = free_base(nodes)
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.ports = [self.base + i for i in range(nodes)]
        self.proc = subprocess.Popen(
            [binary, "local", "--base-port", str(self.base), "--replicas", str(replicas),
             "--listen", f"127.0.0.1:{self.proxy_port}",
             "--admin", f"127.0.0.1:{self.admin_port}",
             "--data-dir", os.path.join(workdir, "cluster")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, "SLOTWAY_LOG_LEVEL": os.environ.get("SLOTWAY_LOG_LEVEL", "warn")},
        )
        self.node_pids = {}

    def wait_ready(self):
        def routed():
            if self.proc.poll() is not None:
                sys.exit(f"slotway exited during start-up ({self.proc.returncode})")
            return command(self.proxy_port, "SET", "soak:probe", "1") in (True, b"OK")
        poll("slotway routing", 120, 0.2, routed)
        # Node PIDs, so every node can be killed (and checked gone) by PID.
        for port in self.ports:
            info = command(port, "INFO", "server")
            self.node_pids[port] = int(info["process_id"])

    def slot_owner(self, slot, ask_port):
        """(primary port, [replica ports]) of `slot` per CLUSTER SLOTS on one node."""
        for entry in raw_cluster_slots(ask_port):
            lo, hi, primary, *replicas = entry
            if lo <= slot <= hi:
                return int(primary[1]), [int(r[1]) for r in replicas]
        raise RuntimeError(f"slot {slot} has no owner")

    def report(self):
        url = f"http://127.0.0.1:{self.admin_port}/cluster"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)


def raw_cluster_slots(port):
    """CLUSTER SLOTS as nested lists, whatever redis-py's callback makes of it."""
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    client.set_response_callback("CLUSTER SLOTS", lambda reply, **_: reply)
    try:
        return client.execute_command("CLUSTER SLOTS")
    finally:
        client.close()


# ---------------------------------------------------------------- failover


class Failover:
    """Kills the primary of slot 0 and times what follows."""

    def __init__(self, cluster, stats):
        self.cluster, self.stats = cluster, stats
        self.killed_port = None
        self.replicas = []
        self.kill_time = None
        self.promoted = None  # (port, seconds after the kill)
        self.first_write = None  # seconds after the kill
        self.notes = []

    def kill(self):
        primary, replicas = self.cluster.slot_owner(0, self.cluster.ports[-1])
        self.killed_port, self.replicas = primary, replicas
        pid = self.cluster.node_pids[primary]
        self.kill_time = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        threading.Thread(target=self.watch_roles, daemon=True).start()
        threading.Thread(target=self.probe_writes, daemon=True).start()
        return primary

    def watch_roles(self):
        def promoted():
            for port in self.replicas:
                role = command(port, "ROLE", timeout=1)
                if role and role[0] in (b"master", "master"):
                    return port
            return None
        try:
            port = poll("a replica to take over", 60, 0.1, promoted)
            self.promoted = (port, time.monotonic() - self.kill_time)
        except TimeoutError as e:
            self.notes.append(str(e))

    def probe_writes(self):
        # Any key of the killed primary's slots will do; slot 0's range starts at 0.
        key = key_in_slots("soak:failover:", 0, 100)
        r = client(self.cluster.proxy_port)

        def written():
            return r.set(key, "x")
        try:
            poll("a write through the proxy on the killed shard", 60, 0.05, written)
            self.first_write = time.monotonic() - self.kill_time
        except TimeoutError as e:
            self.notes.append(str(e))
        r.close()

    def verdict(self):
        """Whether the proxy now routes the killed shard to the promoted replica."""
        if self.promoted is None:
            return False, "no replica took over"
        report = self.cluster.report()
        for shard in report["shards"]:
            if any(lo <= 0 <= hi for lo, hi in shard["slots"]):
                primary = shard["primary"]
                port = int(primary["address"].rsplit(":", 1)[1])
                ok = port == self.promoted[0] and primary.get("connected") is True
                return ok, (f"proxy's slot 0 primary {primary['address']} "
                            f"(connected: {primary.get('connected')}), promoted replica port "
                            f"{self.promoted[0]}, /readyz ready: {report['ready']}")
        return False, "slot 0 not in the proxy's report"


# ---------------------------------------------------------------- sampling and report


def mib(kib):
    return kib / 1024


def sample_loop(cluster, stats, start, deadline, interval, kill_after, failover, stop):
    """Samples every `interval` s until the deadline; kills the primary at `kill_after`."""
    pid = cluster.proc.pid
    rows = []
    last_ops, last_t = 0, start
    announced = False
    print(f"{'t s':>6} {'RSS MiB':>8} {'peak':>7} {'fds':>5} {'requests':>10} {'req/s':>8} {'errors':>7}  event",
          flush=True)
    max_samples = int((deadline - start) / interval) + 3
    for _ in range(max_samples):
        if stop.is_set():
            break
        now = time.monotonic()
        event = ""
        if failover.kill_time is None and now - start >= kill_after:
            port = failover.kill()
            event = f"SIGKILL primary of slot 0 (port {port})"
        if cluster.proc.poll() is not None:
            sys.exit(f"slotway exited during the soak ({cluster.proc.returncode})")
        rss, hwm = proc_status(pid)
        fds = fd_count(pid)
        ops, errs = stats.snapshot()
        rate = (ops - last_ops) / max(now - last_t, 1e-3)
        last_ops, last_t = ops, now
        rows.append((now - start, rss, hwm, fds, ops, errs))
        if failover.promoted and not announced:
            announced = True
            event += f" replica {failover.promoted[0]} promoted {failover.promoted[1]:.1f} s after the kill"
        print(f"{now - start:>6.0f} {mib(rss):>8.1f} {mib(hwm):>7.1f} {fds:>5} {ops:>10} {rate:>8.0f} {errs:>7}  {event.strip()}",
              flush=True)
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    return rows


def settle(pid, baseline, timeout=30):
    """Descriptor count once it stops falling (or after `timeout` s)."""
    end = time.monotonic() + timeout
    last, steady = fd_count(pid), 0
    while time.monotonic() < end and steady < 6:
        time.sleep(0.5)
        now = fd_count(pid)
        steady = steady + 1 if now == last else 0
        last = now
        if now <= baseline:
            break
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True, help="a release build of slotway")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--getset", type=int, default=4, help="SET/GET threads")
    ap.add_argument("--multi", type=int, default=2, help="MSET/MGET threads")
    ap.add_argument("--pipeline", type=int, default=2, help="pipelining threads")
    ap.add_argument("--no-benchmark", action="store_true", help="skip redis-benchmark")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable slotway build")

    stop = threading.Event()
    bench_procs = set()
    workdir = tempfile.TemporaryDirectory(prefix="slotway-soak-")
    log_path = os.path.join(workdir.name, "slotway.log")
    log = open(log_path, "w")
    cluster = None

    def on_signal(*_):
        raise SystemExit(130)
    # Explicit handlers: a shell starting this in the background would have SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster = Cluster(binary, workdir.name, log)
        cluster.wait_ready()
        port, pid = cluster.proxy_port, cluster.proc.pid
        print(f"slotway pid {pid} on 127.0.0.1:{port}, nodes {cluster.ports[0]}-{cluster.ports[-1]}, "
              f"admin 127.0.0.1:{cluster.admin_port}; {args.minutes:g} min of load", flush=True)
        time.sleep(2)  # let the first topology refresh and backend connects finish
        idle_rss, _ = proc_status(pid)
        idle_fds = fd_count(pid)

        stats = Stats()
        start = stats.start
        deadline = start + args.minutes * 60
        threads = []

        def spawn(target, *a):
            t = threading.Thread(target=target, args=a, daemon=True)
            t.start()
            threads.append(t)
        for w in range(args.getset):
            spawn(getset_worker, port, w, stats, stop, deadline)
        for w in range(args.multi):
            spawn(multi_worker, port, w, stats, stop, deadline)
        for w in range(args.pipeline):
            spawn(pipeline_worker, port, w, stats, stop, deadline)
        pubsub = PubSub(port, stats, stop, deadline)
        spawn(pubsub.subscriber)
        spawn(pubsub.publisher)
        spawn(churn_worker, port, stats, stop, deadline)
        if not args.no_benchmark:
            spawn(benchmark_worker, port, stats, stop, deadline, bench_procs)

        failover = Failover(cluster, stats)
        rows = sample_loop(cluster, stats, start, deadline, args.interval,
                           (deadline - start) / 2, failover, stop)
        stop.set()
        for p in list(bench_procs):
            p.kill()  # a batch would run on past the deadline
        for t in threads:
            t.join(timeout=OP_TIMEOUT + 10)
        alive = sum(t.is_alive() for t in threads)
        end_rss, _ = proc_status(pid)
        after_fds = settle(pid, idle_fds)
        time.sleep(2)
        settled_rss, hwm = proc_status(pid)
        followed, how = failover.verdict()

        peak_fds = max(r[3] for r in rows)
        rss_in_load = [r[1] for r in rows]
        second_half = [r[1] for r in rows if r[0] >= (deadline - start) / 2]
        print()
        print("summary")
        print(f"  requests           {sum(stats.ops.values())} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(stats.ops.items()))})")
        print(f"  RSS MiB            idle {mib(idle_rss):.1f}, first sample {mib(rss_in_load[0]):.1f}, "
              f"peak {mib(max(rss_in_load)):.1f} (VmHWM {mib(hwm):.1f}), last sample {mib(rss_in_load[-1]):.1f}, "
              f"after the load {mib(settled_rss):.1f}; second half min/max "
              f"{mib(min(second_half or [0])):.1f}/{mib(max(second_half or [0])):.1f}")
        print(f"  descriptors        idle {idle_fds}, peak {peak_fds}, at the end of the load "
              f"{rows[-1][3]}, after the clients closed {after_fds}")
        print(f"  failover           killed port {failover.killed_port}; "
              + (f"replica {failover.promoted[0]} promoted after {failover.promoted[1]:.1f} s; "
                 if failover.promoted else "no promotion seen; ")
              + (f"first write through the proxy on that shard {failover.first_write:.1f} s after the kill"
                 if failover.first_write is not None else "no write through the proxy succeeded on that shard"))
        print(f"  failover followed  {'yes' if followed else 'NO'}: {how}")
        for note in failover.notes:
            print(f"  note               {note}")
        missed = pubsub.published - len(pubsub.received)
        print(f"  pub/sub            published {pubsub.published}, received {len(pubsub.received)}, "
              f"missed {missed}")
        if alive:
            print(f"  load threads still running at the end: {alive}")
        for line in stats.details:
            print(f"  wrong read         {line}")
        total_errors = sum(stats.errors.values())
        print(f"  errors             {total_errors}")
        for label, count in stats.errors.most_common():
            times = stats.error_times[label]
            when = ""
            if times:
                rel = [t - start for t in times]
                when = f" (t {min(rel):.0f}-{max(rel):.0f} s)"
            print(f"    {count:>6}  {label}{when}")
        return 0 if followed else 1
    finally:
        stop.set()
        cleanup(cluster, bench_procs, log)
        workdir.cleanup()


def cleanup(cluster, bench_procs, log):
    """Stops every process this script started, by PID: benchmarks, slotway, then any node left."""
    for p in list(bench_procs):
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    if cluster is None:
        log.close()
        return
    if cluster.proc.poll() is None:
        cluster.proc.send_signal(signal.SIGTERM)
        try:
            cluster.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.proc.kill()
            cluster.proc.wait(timeout=10)
    # The nodes die with slotway (parent-death signal); make sure, by PID.
    for port, pid in cluster.node_pids.items():
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            print(f"node {port} (pid {pid}) outlived slotway: killing it", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log.close()


if __name__ == "__main__":
    sys.exit(main())
