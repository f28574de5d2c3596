"""Hostile clients against examples/pubsub.rs.
usage: python3 benches/fault/pubsub_attacks.py ATTACK [PORT]
ATTACK: many_topics | fanout | slow_subs | partial_lines | flood | full_subs"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import args, start

attack, port, conn = args(41001)


srv, pr = start("pubsub", port)
extra = ""
try:
    if attack == "many_topics":
        # one client, SUB to distinct 60 KB topic names, reading the OKs; 6 s cap
        s = conn()
        name_len = int(os.environ.get("NAME_LEN", 60000))
        limit = int(os.environ.get("TOPICS", 4000))
        t_end = time.time() + 6
        n = 0
        pad = b"t" * (name_len - 12)
        while n < limit and time.time() < t_end:
            batch = b"".join(b"SUB %s%012d\n" % (pad, n + k) for k in range(16))
            s.sendall(batch)
            got = b""
            while got.count(b"\n") < 16:
                got += s.recv(4096)
            n += 16
            if n % 512 == 0:
                srv.sample()
        r_held = srv.sample()
        s.close()
        time.sleep(1.0)
        extra = f"topics={n} name_len={name_len} rss_while_held={r_held} rss_after_close={srv.sample()}"
    elif attack == "fanout":
        # N subscribers that never read; one publisher pubs 60 KB messages
        nsub = int(os.environ.get("SUBS", 2000))
        subs = []
        for i in range(nsub):
            s = conn(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"SUB hot\n"); subs.append(s)
        for s in subs:
            s.recv(3)  # OK\n, then never read again
        p = conn()
        msg = b"PUB hot " + b"m" * 60000 + b"\n"
        t_end = time.time() + 6
        pubs, worst_pub, oks = 0, 0.0, []
        while time.time() < t_end and pubs < 40:
            t0 = time.monotonic()
            p.sendall(msg)
            line = b""
            while not line.endswith(b"\n"):
                line += p.recv(100)
            worst_pub = max(worst_pub, time.monotonic() - t0)
            oks.append(line.strip().decode())
            pubs += 1
            srv.sample()
        extra = f"subs={nsub} pubs={pubs} worst_pub={worst_pub*1e3:.0f}ms replies={oks[:3]}..{oks[-3:]} fds={srv.fds()}"
        for s in subs: s.close()
        p.close()
    elif attack == "slow_subs":
        # N subscribers, each to its own 1 MiB of backlog: never read
        nsub = int(os.environ.get("SUBS", 1000))
        subs = []
        for i in range(nsub):
            s = conn(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"SUB t%d\n" % i); subs.append(s)
        for s in subs: s.recv(3)
        p = conn(); p.settimeout(10)
        # pipeline PUBs of 16 KB to each subscriber's own topic, ~60 each (just under 1 MiB)
        body = b"x" * 16000
        per = int(os.environ.get("PER", 60))
        t0 = time.time(); sent = 0
        for rnd in range(per):
            p.sendall(b"".join(b"PUB t%d %s\n" % (i, body) for i in range(nsub)))
            sent += nsub
            # read replies so publisher is not backpressured
            want = nsub; got = b""
            while got.count(b"\n") < want:
                got += p.recv(65536)
            srv.sample()
            if time.time() - t0 > 8: break
        extra = f"subs={nsub} pubs={sent} secs={time.time()-t0:.1f} fds={srv.fds()}"
        held = srv.sample()
        for s in subs: s.close()
        time.sleep(1)
        extra += f" rss_held={held} rss_after_close={srv.sample()}"
    elif attack == "partial_lines":
        n = int(os.environ.get("CONNS", 2000))
        cs = []
        for i in range(n):
            s = conn(); s.sendall(b"PUB x " + b"a" * 65000)  # no newline, under 64 KiB
            cs.append(s)
        time.sleep(1)
        extra = f"conns={n} rss_held={srv.sample()}"
        for s in cs: s.close()
        time.sleep(1); extra += f" rss_after={srv.sample()}"
    elif attack == "full_subs":
        # CONNS clients each take their 10,000 subscriptions (250-byte
        # names, distinct), then all close at once: the topic table grows
        # to CONNS x 10,000 names, then empties
        nconn = int(os.environ.get("CONNS", 50)); cs = []
        pad = b"t" * 240
        for c in range(nconn):
            s = conn()
            for b in range(0, 10000, 1000):
                s.sendall(b"".join(b"SUB %s%05d%05d\n" % (pad, c, b + k) for k in range(1000)))
                got = b""
                while got.count(b"\n") < 1000:
                    got += s.recv(1 << 16)
            cs.append(s)
        held = srv.sample()
        for s in cs: s.close()
        time.sleep(2)
        extra = f"conns={nconn} subscriptions={nconn * 10000} rss_held={held} rss_after_close={srv.sample()}"
    elif attack == "flood":
        cs = []
        t_end = time.time() + 5
        try:
            while time.time() < t_end and len(cs) < 30000:
                cs.append(conn())
        except OSError as e:
            extra = f"client stopped at {len(cs)}: {e}; "
        time.sleep(1)
        extra += f"conns={len(cs)} server_fds={srv.fds()}"
        for s in cs: s.close()
finally:
    pr.finish()
    srv.report(attack, pr, extra)
