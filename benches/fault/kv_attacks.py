"""Hostile clients against examples/kv.rs.
usage: python3 benches/fault/kv_attacks.py ATTACK [PORT]
ATTACK: partial_bulk | slow_bytes | keyspace | odd_numbers"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import args, start

attack, port, conn = args(41002)

srv, pr = start("kv", port)
extra = ""
try:
    if attack == "partial_bulk":
        # N connections each send a SET whose value declares 16,000,000 bytes
        # and send all but the last few, then hold the connection open.
        n = int(os.environ.get("CONNS", 24))
        size = 16_000_000
        chunk = b"v" * 1_000_000
        cs = []
        t0 = time.time()
        for i in range(n):
            s = conn()
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % size)
            for _ in range(15):
                s.sendall(chunk)
            s.sendall(chunk[:999_000])
            cs.append(s)
            srv.sample()
        time.sleep(1)
        held = srv.sample()
        closed = 0
        for s in cs:  # did the server close any of them?
            s.setblocking(False)
            try:
                if s.recv(100) == b"": closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        for s in cs: s.close()
        time.sleep(1)
        extra = f"conns={n} each=15.999MB-partial rss_held={held} closed_by_server={closed} rss_after_close={srv.sample()} secs={time.time()-t0:.1f}"
    elif attack == "slow_bytes":
        # slowloris: 1000 conns, each holding an unfinished command, fed one
        # byte per connection per round for 5 s
        n = int(os.environ.get("CONNS", 1000))
        cs = [conn() for _ in range(n)]
        cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$100000\r\n" + b"z" * 100000
        t_end = time.time() + 5; pos = 0
        while time.time() < t_end and pos < len(cmd) - 1:
            for s in cs:
                s.send(cmd[pos:pos+1])
            pos += 1
        extra = f"conns={n} bytes_each={pos} fds={srv.fds()} cpu={srv.cpu():.2f}s"
        for s in cs: s.close()
    elif attack == "keyspace":
        # no memory limit: SET distinct 1 KB keys for 5 s
        s = conn(); val = b"x" * 1000
        t_end = time.time() + 5; n = 0
        while time.time() < t_end:
            s.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$12\r\n%012d\r\n$1000\r\n%s\r\n" % (n + k, val) for k in range(500)))
            got = b""
            while got.count(b"\n") < 500:
                got += s.recv(65536)
            n += 500
        extra = f"keys={n} rss_now={srv.sample()}"
    elif attack == "odd_numbers":
        s = conn()
        cmds = [
            b"SET a 1 EX 9223372036854775807", b"SET a 1 PX 9223372036854775807",
            b"SET a 1 EXAT 9223372036854775807", b"SET a 1 PXAT -9223372036854775808",
            b"SET a 1 EX 0", b"SET a 1 EX -1", b"SET b 1", b"EXPIRE b 9223372036854775807",
            b"PEXPIRE b -9223372036854775808", b"EXPIREAT b -9223372036854775808",
            b"PEXPIREAT b 9223372036854775807", b"TTL b", b"PTTL b", b"EXPIRETIME b",
            b"SET c 9223372036854775807", b"INCR c", b"SET d -9223372036854775808", b"DECR d",
            b"DECRBY d -9223372036854775808", b"INCRBY d -9223372036854775808",
            b"SET e 0", b"DECRBY e -9223372036854775808", b"EXPIRE c 1 GT LT",
            b"SET f \"\\x00\\xff\" KEEPTTL GET", b"MGET", b"MSET a", b"SELECT 99999999999999999999",
            b"*-9223372036854775808", b"SET\x00 a b", b"\xff\xfe\x00", b"\"unbalanced", b"PING",
        ]
        out = []
        for c in cmds:
            s.sendall(c + b"\r\n")
            time.sleep(0.02)
        time.sleep(0.3)
        s.setblocking(False)
        try:
            data = s.recv(100000)
        except BlockingIOError:
            data = b""
        extra = f"replies={data[:600]!r}"
finally:
    pr.finish()
    srv.report(attack, pr, extra)
