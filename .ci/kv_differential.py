#!/usr/bin/env python3
"""Differential test: the kv example against redis-server.

Random sequences of the commands kv supports (strings, counters, multi-key
commands, SET's options in every combination, EXPIRE/PEXPIRE/TTL/PTTL/
PERSIST), sent in pipelined batches to both servers; every reply must be
byte-for-byte the same. TTL and PTTL are compared by class (-2, -1, or a
positive number): the two servers' clocks differ by the time between the
two sends. TTLs given are long (1,000 s and up) or not positive (delete at
once), so no key expires during a run. The seed is printed; pass it back
with --seed to replay a failure.

Usage: kv_differential.py KV_BINARY [--seed N] [--commands N]
"""

import argparse
import os
import random
import socket
import subprocess
import sys
import time

KEYS = [b"k%d" % i for i in range(6)] + [b"counter", b""]
VALUES = [
    b"", b"0", b"1", b"-1", b"7", b"007", b"-0", b"+5", b" 1", b"1 ", b"12abc", b"abc",
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
    b"99999999999999999999", b"3.5", b"hello world", b"\x00\xff\r\n", b"x" * 100,
]
INTS = [
    b"0", b"1", b"-1", b"5", b"-5", b"1000", b"007", b"-0", b"abc", b"", b"1.5",
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775806",
    b"4611686018427387904", b"-4611686018427387904",
]
# Expiry arguments: long, not positive, or out of range; never short.
TTLS = [
    b"1000", b"100000", b"86400", b"0", b"-1", b"-100", b"007", b"-0", b"abc", b"",
    b"9223372036854775807", b"9223372036854775", b"9223372036854774",
    b"-9223372036854775808", b"-9223372036854775",
]


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self):
        """One reply, as its raw bytes."""
        line = self._line()
        raw = line + b"\r\n"
        kind = line[:1]
        if kind == b"$" and line != b"$-1":
            raw += self._exact(int(line[1:]) + 2)
        elif kind == b"*" and line != b"*-1":
            for _ in range(int(line[1:])):
                raw += self.reply()
        elif kind not in (b"+", b"-", b":", b"$", b"*"):
            raise ValueError("not a RESP reply: %r" % line)
        return raw

    def run(self, commands):
        self.s.sendall(b"".join(encode(c) for c in commands))
        return [self.reply() for _ in commands]


def random_command(rng):
    key = lambda: rng.choice(KEYS)
    value = lambda: rng.choice(VALUES) if rng.random() < 0.9 else os.urandom(rng.randrange(1, 40))
    name = rng.choice([
        b"SET", b"SET", b"SET", b"GET", b"GET", b"DEL", b"EXISTS", b"INCR", b"DECR",
        b"INCRBY", b"DECRBY", b"MGET", b"MSET", b"EXPIRE", b"PEXPIRE", b"TTL", b"PTTL",
        b"PERSIST", b"DBSIZE", b"ECHO", b"PING",
    ])
    if rng.random() < 0.2:
        name = name.lower() if rng.random() < 0.5 else name.capitalize()
    upper = name.upper()
    if upper == b"SET":
        args = [name, key(), value()]
        opts = [b"NX", b"XX", b"GET", b"KEEPTTL", b"EX", b"PX", b"nx", b"get", b"ex", b"BOGUS"]
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            opt = rng.choice(opts)
            args.append(opt)
            if opt.upper() in (b"EX", b"PX") and rng.random() < 0.95:
                args.append(rng.choice(TTLS))
        return args
    if upper in (b"GET", b"INCR", b"DECR", b"TTL", b"PTTL", b"PERSIST"):
        args = [name, key()]
    elif upper in (b"DEL", b"EXISTS", b"MGET"):
        args = [name] + [key() for _ in range(rng.randrange(1, 6))]
    elif upper in (b"INCRBY", b"DECRBY"):
        args = [name, key(), rng.choice(INTS)]
    elif upper == b"MSET":
        args = [name]
        for _ in range(rng.randrange(1, 4)):
            args += [key(), value()]
    elif upper in (b"EXPIRE", b"PEXPIRE"):
        args = [name, key(), rng.choice(TTLS)]
    elif upper == b"ECHO":
        args = [name, value()]
    elif upper == b"PING":
        args = [name] + ([value()] if rng.random() < 0.5 else [])
    else:
        args = [name]
    # Now and then a wrong number of arguments.
    if rng.random() < 0.02:
        args = args[:1] if len(args) > 1 and upper not in (b"PING", b"DBSIZE") else args + [b"extra", b"more"]
    return args


def ttl_class(raw):
    if raw.startswith(b":") and int(raw[1:]) > 0:
        return b":<positive>\r\n"
    return raw


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d" % port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kv")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--commands", type=int, default=20000)
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**32)
    print("kv differential: seed %d (replay with --seed %d), %d commands" % (seed, seed, opts.commands))
    rng = random.Random(seed)

    redis_port, kv_port = free_port(), free_port()
    procs = [
        subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL),
        subprocess.Popen([opts.kv, "127.0.0.1:%d" % kv_port], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]
    try:
        wait_for(redis_port)
        wait_for(kv_port)
        redis, kv = Conn(redis_port), Conn(kv_port)
        for c in (redis, kv):
            c.run([[b"FLUSHALL"]])
        history = []
        sent = 0
        deadline = time.monotonic() + 50
        while sent < opts.commands and time.monotonic() < deadline:
            batch = [random_command(rng) for _ in range(rng.choice([1, 1, 2, 5, 20, 50]))]
            want, got = redis.run(batch), kv.run(batch)
            for cmd, w, g in zip(batch, want, got):
                history.append(cmd)
                if cmd[0].upper() in (b"TTL", b"PTTL"):
                    w, g = ttl_class(w), ttl_class(g)
                if w != g:
                    print("MISMATCH after %d commands (seed %d)" % (len(history), seed))
                    for h in history[-15:]:
                        print("   ", b" ".join(h)[:200])
                    print("  redis-server: %r" % w[:300])
                    print("  kv:           %r" % g[:300])
                    return 1
            sent += len(batch)
        # The keyspaces must agree too.
        keys = [[b"MGET"] + KEYS, [b"DBSIZE"]]
        if redis.run(keys) != kv.run(keys):
            print("MISMATCH in the final keyspace (seed %d)" % seed)
            return 1
        print("kv differential: %d commands answered identically" % sent)
        return 0
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
