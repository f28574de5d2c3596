"""kv: SET distinct keys of KEYLEN bytes (default 1 MB) with 1-byte values;
a HashMap resize rehashes every key in full. Prints the probe timeline.
usage: TIMELINE=1 python3 benches/fault/kv_big_keys.py [COUNT] [PORT]"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import raise_nofile, start
raise_nofile()
count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
port = int(sys.argv[2]) if len(sys.argv) > 2 else 41030
klen = int(os.environ.get("KEYLEN", 1_000_000))
srv, pr = start("kv", port)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
pad = b"k" * (klen - 12); t0 = time.time(); n = 0
while n < count and time.time() - t0 < 8:
    s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s%012d\r\n$1\r\nv\r\n" % (klen, pad, n))
    assert s.recv(5) == b"+OK\r\n"
    n += 1
    if n % 50 == 0: srv.sample()
pr.finish()
srv.report("big_keys", pr, f"keys={n} keylen={klen} secs={time.time()-t0:.1f}")
