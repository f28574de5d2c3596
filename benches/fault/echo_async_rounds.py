"""Repeated rounds of 50 never-reading line flooders against echo_async (or
echo --lines): does RSS after each round keep growing?
usage: python3 benches/fault/echo_async_rounds.py [echo_async|echo_lines] [ROUNDS] [PORT]"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import Server, raise_nofile
raise_nofile()
which = sys.argv[1] if len(sys.argv) > 1 else "echo_async"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
port = int(sys.argv[3]) if len(sys.argv) > 3 else 41005
srv = Server("echo_async" if which == "echo_async" else "echo", port, [] if which == "echo_async" else ["--lines"])
blob = b"x\n" * 32768
after = []
for r in range(rounds):
    cs = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for s in cs: s.setblocking(False)
    t_end = time.time() + 3
    while time.time() < t_end:
        for s in cs:
            try: s.send(blob)
            except OSError: pass
        time.sleep(0.001)
        srv.sample()
    for s in cs: s.close()
    time.sleep(1.5)
    after.append(srv.sample())
srv.report(f"{which} rounds", None, f"rss_after_each_round={after}")
