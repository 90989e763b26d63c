#!/usr/bin/env python3
"""The client side of benches/soak.py: the load threads and the counters they share.

Every thread talks to the proxy only, on loopback, and runs until its stop event is set or its
deadline passes; every operation has a timeout. Errors are counted by kind and message shape.
"""

import collections
import os
import random
import re
import socket
import subprocess
import threading
import time

import redis

SLOTS = 16384
OP_TIMEOUT = 10.0  # seconds; longer than the proxy's 5 s retry deadline


def crc16(data):
    """CRC16-XMODEM, as Redis Cluster hashes keys."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return crc16(raw) % SLOTS


class Stats:
    """Counters shared by the load threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.error_times = collections.defaultdict(list)
        self.details = []  # the first few wrong reads, key by key
        self.start = time.monotonic()

    def done(self, kind, n=1):
        with self.lock:
            self.ops[kind] += n

    def error(self, kind, exc_or_text, n=1):
        text = exc_or_text if isinstance(exc_or_text, str) else f"{type(exc_or_text).__name__}: {exc_or_text}"
        # One bucket per message shape: numbers and addresses vary, the kind does not.
        shape = re.sub(r"\d+(\.\d+)*(:\d+)?", "N", text)[:90]
        label = f"{kind}: {shape}"
        with self.lock:
            self.errors[label] += n
            if len(self.error_times[label]) < 1000:
                self.error_times[label].append(time.monotonic())

    def detail(self, text):
        with self.lock:
            if len(self.details) < 20:
                self.details.append(f"t {time.monotonic() - self.start:.1f} s: {text}")

    def snapshot(self):
        with self.lock:
            return sum(self.ops.values()), sum(self.errors.values())


def client(port):
    return redis.Redis(port=port, socket_timeout=OP_TIMEOUT, socket_connect_timeout=OP_TIMEOUT)


def run_loop(stop, deadline, body):
    """Runs body() until stop is set or the deadline passes."""
    while not stop.is_set() and time.monotonic() < deadline:
        body()


def write_then_read(stats, kind, write, read, expected, ops):
    """write(), then read() must return `expected`; every failure is counted under `kind`."""
    try:
        write()
    except redis.RedisError as e:
        stats.error(f"{kind} write", e)  # may or may not have been applied: not read back
        return
    try:
        got = read()
    except redis.RedisError as e:
        stats.error(f"{kind} read", e)
        return
    if got != expected:
        mismatch(stats, kind, read, expected)
    stats.done(kind, ops)


def mismatch(stats, kind, reread, expected):
    """A read did not return the value just written. A second read tells a read that overtook
    its write (the second read sees the value) from a lost write (it does not either)."""
    try:
        again = reread()
    except redis.RedisError:
        again = None
    if again == expected:
        stats.error(kind, "read returned an older value than the write before it; a second read saw the new one")
    else:
        stats.error(kind, "write acknowledged with OK but missing on a second read too (lost write)")
    return again


def client_loop(port, stop, deadline, body):
    """Runs body(client) on one connection of its own until stop or the deadline."""
    r = client(port)
    try:
        run_loop(stop, deadline, lambda: body(r))
    finally:
        r.close()


def getset_worker(port, wid, stats, stop, deadline):
    def body(r):
        key = f"soak:gs:{wid}:{random.randrange(2000)}"
        value = os.urandom(random.choice((8, 100, 1000)))
        write_then_read(stats, "getset", lambda: r.set(key, value), lambda: r.get(key), value, 2)

    client_loop(port, stop, deadline, body)


def multi_worker(port, wid, stats, stop, deadline):
    def body(r):
        # Six keys, almost surely in six slots on several shards.
        keys = [f"soak:mk:{wid}:{random.randrange(5000)}" for _ in range(6)]
        values = {k: str(random.random()).encode() for k in keys}
        write_then_read(stats, "multi", lambda: r.mset(values), lambda: r.mget(keys),
                        [values[k] for k in keys], 2)

    client_loop(port, stop, deadline, body)


def pipeline_worker(port, wid, stats, stop, deadline):
    batch = 0

    def body(r):
        nonlocal batch
        batch += 1
        keys = [f"soak:pl:{wid}:{random.randrange(5000)}" for _ in range(16)]
        # Values unique per batch, so a stale read cannot pass for a fresh one.
        values = [f"{batch}:{i}".encode() for i in range(16)]
        pipe = r.pipeline(transaction=False)
        for k, v in zip(keys, values):
            pipe.set(k, v)
        for k in keys:
            pipe.get(k)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            stats.error("pipeline", e)
            return
        failed = [x for x in replies if isinstance(x, Exception)]
        if failed:
            stats.error("pipeline reply", failed[0], n=len(failed))
            return
        # A key repeated in the batch reads the last value written to it.
        last = dict(zip(keys, values))
        expected = [last[k] for k in keys]
        if replies[16:] != expected:
            again = mismatch(stats, "pipeline", lambda: r.mget(keys), expected)
            for k, want, got, later in zip(keys, expected, replies[16:], again or [None] * 16):
                if got != want:
                    stats.detail(f"pipeline key {k} (slot {key_slot(k)}): wrote {want!r}, "
                                 f"the GET after it read {got!r}, a second read {later!r}")
        stats.done("pipeline", 32)

    client_loop(port, stop, deadline, body)


class PubSub:
    """One publisher numbering its messages, one subscriber noting what arrives."""

    CHANNEL = "soak:events"

    def __init__(self, port, stats, stop, deadline):
        self.port, self.stats, self.stop, self.deadline = port, stats, stop, deadline
        self.published = 0
        self.received = set()
        self.subscribed = threading.Event()

    def subscriber(self):
        r = client(self.port)
        p = r.pubsub(ignore_subscribe_messages=True)
        try:
            p.subscribe(self.CHANNEL)
            self.subscribed.set()
        except redis.RedisError as e:
            self.stats.error("pubsub SUBSCRIBE", e)
            return

        def body():
            try:
                msg = p.get_message(timeout=1.0)
            except redis.RedisError as e:
                self.stats.error("pubsub receive", e)
                time.sleep(0.5)  # the connection is gone; redis-py reconnects and resubscribes
                return
            if msg and msg["type"] == "message":
                self.received.add(int(msg["data"]))
                self.stats.done("pubsub received")

        # Runs a few seconds past the publisher so late messages still count.
        run_loop(threading.Event(), self.deadline + 3, body)
        p.close()
        r.close()

    def publisher(self):
        r = client(self.port)
        self.subscribed.wait(30)

        def body():
            try:
                r.publish(self.CHANNEL, self.published)
                self.published += 1
                self.stats.done("pubsub published")
            except redis.RedisError as e:
                self.stats.error("pubsub PUBLISH", e)
            time.sleep(0.02)

        run_loop(self.stop, self.deadline, body)
        r.close()


def churn_worker(port, stats, stop, deadline):
    """Connections opened and dropped: a full PING, a half-sent request, or no bytes at all."""
    half = [b"*3\r\n$3\r\nSET\r\n$1\r\nk", b"*2\r\n$3\r\nGE", b"GET somekey", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc"]
    n = 0

    def body():
        nonlocal n
        n += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=OP_TIMEOUT) as s:
                if n % 3 == 0:
                    s.sendall(random.choice(half))
                elif n % 3 == 1:
                    s.sendall(b"PING\r\n")
                    if not s.recv(16).startswith(b"+PONG"):
                        stats.error("churn", "PING not answered +PONG")
                        return
            stats.done("churn connections")
        except OSError as e:
            stats.error("churn", e)
        time.sleep(0.02)

    run_loop(stop, deadline, body)


def benchmark_worker(port, stats, stop, deadline, procs):
    """redis-benchmark in batches of 50,000 requests per test, each bounded by a timeout."""
    tests = "set,get,incr,mset"
    per_run = 50000

    def body():
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "10", "-P", "8",
               "-r", "100000", "-n", str(per_run), "-t", tests, "-q"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.add(p)
        # A hung run is killed, which ends the read loop below.
        watchdog = threading.Timer(max(5.0, deadline - time.monotonic() + 30), p.kill)
        watchdog.start()
        errors = 0
        try:
            # Text mode splits the \r-separated progress lines too; each finished test prints
            # one "requests per second" line. redis-benchmark exits at the first error reply.
            for line in p.stdout:
                if "requests per second" in line:
                    stats.done("benchmark", per_run)
                elif "rror" in line and errors < 20:
                    errors += 1
                    stats.error("benchmark", line.strip())
            p.wait()
        finally:
            watchdog.cancel()
            procs.discard(p)
        if p.returncode != 0 and errors == 0 and not stop.is_set():
            stats.error("benchmark", f"redis-benchmark exited {p.returncode}")
        stop.wait(1.0)

    run_loop(stop, deadline, body)
