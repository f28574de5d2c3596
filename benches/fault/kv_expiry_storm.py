"""kv: COUNT keys (default 1,000,000) all given the same deadline (PXAT, a
few seconds ahead), then a well-behaved client's PINGs timed while they
fall due. With a timer per key, the timer phase deleted them all in one go.
usage: TIMELINE=1 python3 benches/fault/kv_expiry_storm.py [COUNT] [PORT]"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import raise_nofile, start
raise_nofile()
count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
port = int(sys.argv[2]) if len(sys.argv) > 2 else 41040
srv, pr = start("kv", port)
s = socket.create_connection(("127.0.0.1", port), timeout=30)
at = int(time.time() * 1000) + int(os.environ.get("AHEAD_MS", 8000))
t0 = time.time(); n = 0; BATCH = 10_000
while n < count and time.time() - t0 < 30:
    k = min(BATCH, count - n)
    s.sendall(b"".join(b"*5\r\n$3\r\nSET\r\n$10\r\n%010d\r\n$1\r\nv\r\n$4\r\nPXAT\r\n$13\r\n%d\r\n"
                       % (n + i, at) for i in range(k)))
    want, got = 5 * k, 0
    while got < want:
        got += len(s.recv(1 << 20))
    n += k
loaded = time.time() - t0
srv.sample()
# Wait for the deadline, then for the store to empty (bounded).
while time.time() * 1000 < at + 50:
    time.sleep(0.05)
t1 = time.time(); m1 = time.monotonic()
while time.time() - t1 < 30:
    s.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
    if s.recv(64) == b":0\r\n":
        break
    time.sleep(0.05)
emptied = time.time() - t1; m2 = time.monotonic()
pr.finish()
during = [lat for t, lat in pr.when if m1 <= t + lat and t <= m2]
srv.report("expiry_storm", pr, f"keys={n} load_s={loaded:.1f} deadline_to_empty_s={emptied:.2f} "
           f"worst_while_expiring={max(during, default=0)*1e3:.1f}ms ({len(during)} probes) "
           f"late_for_deadline={'yes' if loaded * 1000 > at - t0 * 1000 else 'no'}")
