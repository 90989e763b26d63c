"""A redis-py session against slotway, run by tests/it/resp3.rs with protocol 2 and 3.

Usage: client_session.py HOST:PORT PROTOCOL
Prints "ok N checks" and exits 0, or prints the failed check and exits 1.
"""
import sys
import threading
import time

import redis

host, port = sys.argv[1].rsplit(":", 1)
proto = int(sys.argv[2])
r = redis.Redis(host=host, port=int(port), protocol=proto, decode_responses=True)
checks = 0


def check(name, got, want):
    global checks
    checks += 1
    if got != want:
        print(f"FAIL {name} (protocol {proto}): got {got!r}, want {want!r}")
        sys.exit(1)


p = f"{{py{proto}}}"
r.delete(f"{p}h", f"{p}z", f"{p}s", f"{p}l", f"{p}n", f"{p}x")

check("ping", r.ping(), True)
check("set", r.set(f"{p}k", "v"), True)
check("get", r.get(f"{p}k"), "v")
check("get missing", r.get(f"{p}missing"), None)
check("mget", r.mget(f"{p}k", f"{p}missing"), ["v", None])

r.hset(f"{p}h", mapping={"a": "1", "b": "2"})
check("hgetall", r.hgetall(f"{p}h"), {"a": "1", "b": "2"})
check("hgetall missing", r.hgetall(f"{p}nohash"), {})

r.zadd(f"{p}z", {"a": 1, "b": 2.5})
check("zscore", r.zscore(f"{p}z", "b"), 2.5)
check("zscore missing", r.zscore(f"{p}z", "zz"), None)
# redis-py gives tuples in RESP2 and lists in RESP3 (as against Redis itself).
pairs = [tuple(x) for x in r.zrange(f"{p}z", 0, -1, withscores=True)]
check("zrange withscores", pairs, [("a", 1.0), ("b", 2.5)])
check("zincrby", r.zincrby(f"{p}z", 1, "a"), 2.0)
check("zmscore", r.zmscore(f"{p}z", ["a", "nope"]), [2.0, None])

r.sadd(f"{p}s", "x", "y")
check("smembers", r.smembers(f"{p}s"), {"x", "y"})

# A transaction, pipelined as redis-py does.
pipe = r.pipeline(transaction=True)
pipe.incr(f"{p}n").incr(f"{p}n").hgetall(f"{p}h")
check("multi/exec", pipe.execute(), [1, 2, {"a": "1", "b": "2"}])

# WATCH with a conflict.
with r.pipeline() as w:
    w.watch(f"{p}n")
    r.set(f"{p}n", 100)
    w.multi()
    w.incr(f"{p}n")
    try:
        w.execute()
        check("watch conflict", "executed", "WatchError")
    except redis.WatchError:
        check("watch conflict", "WatchError", "WatchError")

# A blocking pop woken by another client.
def push_later():
    time.sleep(0.3)
    redis.Redis(host=host, port=int(port), protocol=proto).rpush(f"{p}l", "item")


threading.Thread(target=push_later).start()
check("blpop", r.blpop([f"{p}l"], timeout=5), [f"{p}l", "item"] if proto == 3 else (f"{p}l", "item"))
check("blpop timeout", r.blpop([f"{p}l"], timeout=0.2), None)

# Client name on the proxy connection.
check("client setname", r.client_setname("py-client"), True)
check("client getname", r.client_getname(), "py-client")
check("client id", isinstance(r.client_id(), int), True)

# Pub/Sub, with RESP3 push messages for protocol 3.
ps = r.pubsub()
ps.subscribe(f"{p}chan")
msg = ps.get_message(timeout=5)
check("subscribe confirmation", (msg["type"], msg["channel"]), ("subscribe", f"{p}chan"))
r.publish(f"{p}chan", "hello")
msg = None
for _ in range(50):
    msg = ps.get_message(timeout=0.1)
    if msg:
        break
check("message", (msg or {}).get("data"), "hello")
ps.close()

# HELLO on a fresh connection: a map in RESP3 (a dict either way in redis-py).
hello = r.execute_command("HELLO", proto)
if isinstance(hello, list):  # RESP2: a flat key/value array
    hello = dict(zip(hello[::2], hello[1::2]))
check("hello proto", hello["proto"], proto)
check("hello server", hello["server"], "redis")

# RESET returns to RESP2 defaults on that connection.
c = r.connection_pool.get_connection("RESET")
c.send_command("RESET")
check("reset", c.read_response(), "RESET")
r.connection_pool.release(c)

print(f"ok {checks} checks")
