#!/usr/bin/env python3
"""Differential test: the kv example against redis-server.

First, raw protocol edge cases (RAW_CASES): each sent as bytes on a new
connection to both servers; what comes back, byte for byte, and whether
the server then closed the connection must be the same.

Then random sequences of the commands kv supports (strings, counters,
multi-key commands, SET's options in every combination, EXPIRE/PEXPIRE/
EXPIREAT/PEXPIREAT with NX/XX/GT/LT, TTL/PTTL/EXPIRETIME/PEXPIRETIME/
PERSIST), sent in pipelined batches to both servers; every reply must be
byte-for-byte the same, except where the two clocks show:
 - TTL and PTTL are compared by class (-2, -1, or a positive number): the
   two servers' clocks differ by the time between the two sends;
 - EXPIRETIME and PEXPIRETIME of a deadline set relative to now may differ
   by a few seconds; of one given as a Unix time, not at all.
TTLs given are long (1,000 s and up) or not positive (delete at once), and
Unix times are far in the future or in the past, so no key expires during
a run and every comparison of deadlines (GT, LT) comes out the same on
both. GT and LT go only with the absolute commands (two relative
deadlines may tie on one server and not on the other). Before DBSIZE
every key is read, as both servers count a key whose deadline has passed
until a read (or their expiry cycle) deletes it.

The seed is printed; pass it back with --seed to replay a failure.

Usage: kv_differential.py KV_BINARY [--seed N] [--commands N]
"""

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
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
BAD_NUMBERS = [b"007", b"-0", b"abc", b"", b"9223372036854775808"]
TTLS = [
    b"1000", b"100000", b"86400", b"0", b"-1", b"-100",
    b"9223372036854775807", b"9223372036854775", b"9223372036854774",
    b"-9223372036854775808", b"-9223372036854775",
] + BAD_NUMBERS
TTLS_MS = [
    b"1000000", b"100000000", b"86400000", b"0", b"-1", b"-100",
    b"9223372036854775807", b"9223372036854775", b"-9223372036854775808",
] + BAD_NUMBERS
# Unix times: far in the future, in the past, or out of range.
FUTURE_S = [4102444800, 4102444801, 32503680000, 9223372036854775]
FUTURE_MS = [4102444800000, 4102444800999, 32503680000000, 9223372036854775807]
UNIX_S = [b"%d" % t for t in FUTURE_S] + [
    b"1", b"1000000000", b"0", b"-1", b"-9223372036854775", b"9223372036854776",
    b"-9223372036854776",
] + BAD_NUMBERS
UNIX_MS = [b"%d" % t for t in FUTURE_MS] + [
    b"1", b"1000000000000", b"0", b"-1", b"-9223372036854775808",
] + BAD_NUMBERS
# Deadlines given as Unix times, in ms: EXPIRETIME answers them exactly.
ABSOLUTE_MS = set(FUTURE_MS) | {t * 1000 for t in FUTURE_S}

# Raw protocol edge cases: bytes sent on a new connection; the replies and
# whether the server closes must be the same. Each is (name, bytes).
RAW_CASES = [
    ("empty array then PING", b"*0\r\nPING\r\n"),
    ("null array then PING", b"*-1\r\nPING\r\n"),
    ("negative count is an empty request", b"*-5\r\n*1\r\n$4\r\nPING\r\n"),
    ("count -0", b"*-0\r\nPING\r\n"),
    ("count with a leading zero", b"*01\r\n$4\r\nPING\r\n"),
    ("count with a plus", b"*+1\r\n$4\r\nPING\r\n"),
    ("empty count", b"*\r\nPING\r\n"),
    ("count not a number", b"*x\r\n"),
    ("count followed by a space", b"*1 \r\n$4\r\nPING\r\n"),
    ("count over INT_MAX", b"*2147483648\r\n"),
    ("count of 20 digits", b"*99999999999999999999\r\n"),
    ("count ended by a bare LF", b"*1\n$4\r\nPING\r\n"),
    ("element not a bulk string", b"*1\r\n:5\r\n"),
    ("second element not a bulk string", b"*2\r\n$4\r\nECHO\r\nx\r\n"),
    ("element an empty line", b"*1\r\n\r\n"),
    ("element starting with a high byte", b"*1\r\n\xff\r\n"),
    ("bulk length -1", b"*1\r\n$-1\r\n"),
    ("bulk length over 512 MiB", b"*1\r\n$536870913\r\n"),
    ("bulk length not a number", b"*1\r\n$abc\r\n"),
    ("empty bulk length", b"*1\r\n$\r\n"),
    ("any byte after a count's CR", b"*1\rX$4\r\nPING\r\n"),
    ("any two bytes after bulk data", b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n"),
    ("bulk data longer than its length", b"*2\r\n$4\r\nECHO\r\n$1\r\nab\r\n"),
    ("a $ line is inline", b"$3\r\nGET\r\n"),
    ("+ : - lines are inline", b"+PING\r\n:5\r\n-ERR\r\n"),
    ("unterminated double quote", b"SET k \"a b\r\n"),
    ("quote opened inside a word, unterminated", b"ECHO a\"b\r\n"),
    ("closing double quote not ending the word", b"ECHO \"a\"b\r\n"),
    ("closing single quote not ending the word", b"ECHO 'a'b\r\n"),
    ("backslash ending a quoted word", b"ECHO \"a\\\r\n"),
    ("quote opened inside a word", b"SET k a\"b c\"\r\nGET k\r\n"),
    ("escapes in quotes", b"ECHO \"\\x41\\xZZ\\q\\n\\t\\\"\"\r\nECHO 'it\\'s \\n'\r\n"),
    ("vertical tab and form feed", b"ECHO \x0bx\x0cy\r\nECHO \"a\"\x0b\r\n"),
    ("empty and blank lines", b"   \r\n\r\n\n \t \r\nPING\r\n"),
    ("a CR before the line's CRLF", b"PING\r\r\n"),
    ("inline line of exactly 64 KiB", b"a" * 65536 + b"\n"),
    ("inline line too long", b"x" * 70000),
    ("replies before a protocol error", b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n?\r\n"),
    ("unsupported option with a high byte", b"EXPIRE k 10 BOGUS\xff\r\n"),
    ("unsupported option ending in CRLF", b"*4\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n10\r\n$5\r\nfoo\r\n\r\n"),
    ("unknown command, long arguments", b"*3\r\n$3\r\nFOO\r\n$100\r\n" + b"a" * 100 + b"\r\n$100\r\n" + b"b" * 100 + b"\r\n"),
    ("unknown command with CRLF and NUL", b"*2\r\n$5\r\nA\r\nBC\r\n$3\r\nx\x00y\r\n*1\r\n$3\r\nA\x00B\r\n"),
    ("wrong arity in mixed case", b"*1\r\n$6\r\nExPiRe\r\n*1\r\n$10\r\nexpireTIME\r\n"),
    ("tabs and quoted command names", b"SET\tk\tv\r\n\"GET\" 'k'\r\n"),
    ("empty command names", b"''\r\n\"\" a\r\n*1\r\n$0\r\n\r\n"),
    ("unknown UTF-8 and 200-byte names", "ÜBER ärger\r\n".encode() + b"Z" * 200 + b" a\r\n"),
    ("EXPIRE option combinations",
     # The last one asks for 20 s, not 10 again: `EXPIRE k 10 GT` a moment
     # after `EXPIRE k 10` is 1 or 0 depending on whether a millisecond
     # passed between them (seen: redis-server 1, kv 0).
     b"EXPIRE k 10 nx nx\r\nEXPIRE k 10 xx gt lt\r\nEXPIRE k 10 lt gt\r\nEXPIRE k 20 gt gt\r\n"),
    ("SET options in lower case", b"set k v ex 10 exat 5\r\nset k v keepttl get\r\nset k v get nx\r\n"),
    ("SET EXAT in the past, then reads", b"SET z 1 EXAT 5\r\nEXISTS z\r\nSET z 1 PXAT 1 GET\r\nGET z\r\n"),
    ("QUIT stops the pipeline", b"QUIT\r\nPING\r\n"),
    ("a command left incomplete", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$3\r\nGET"),
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
        b"PERSIST", b"DBSIZE", b"ECHO", b"PING", b"EXPIREAT", b"PEXPIREAT", b"EXPIRETIME",
        b"PEXPIRETIME", b"EXPIRE", b"PEXPIREAT",
    ])
    if rng.random() < 0.2:
        name = name.lower() if rng.random() < 0.5 else name.capitalize()
    upper = name.upper()
    if upper == b"SET":
        args = [name, key(), value()]
        opts = [b"NX", b"XX", b"GET", b"KEEPTTL", b"EX", b"PX", b"EXAT", b"PXAT", b"nx", b"get",
                b"ex", b"pxat", b"BOGUS"]
        times = {b"EX": TTLS, b"PX": TTLS_MS, b"EXAT": UNIX_S, b"PXAT": UNIX_MS}
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            opt = rng.choice(opts)
            args.append(opt)
            if opt.upper() in times and rng.random() < 0.95:
                args.append(rng.choice(times[opt.upper()]))
        return args
    if upper in (b"GET", b"INCR", b"DECR", b"TTL", b"PTTL", b"PERSIST", b"EXPIRETIME",
                 b"PEXPIRETIME"):
        args = [name, key()]
    elif upper in (b"DEL", b"EXISTS", b"MGET"):
        args = [name] + [key() for _ in range(rng.randrange(1, 6))]
    elif upper in (b"INCRBY", b"DECRBY"):
        args = [name, key(), rng.choice(INTS)]
    elif upper == b"MSET":
        args = [name]
        for _ in range(rng.randrange(1, 4)):
            args += [key(), value()]
    elif upper in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"):
        times = {b"EXPIRE": TTLS, b"PEXPIRE": TTLS_MS, b"EXPIREAT": UNIX_S, b"PEXPIREAT": UNIX_MS}
        args = [name, key(), rng.choice(times[upper])]
        # GT and LT only where the deadline is a Unix time (see above).
        opts = [b"NX", b"XX", b"nx", b"BOGUS"]
        if upper.endswith(b"AT"):
            opts += [b"GT", b"LT", b"gt", b"lt"]
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            args.append(rng.choice(opts))
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


def same_deadline(unit_ms, want, got):
    """EXPIRETIME (unit_ms 1000) or PEXPIRETIME (1) replies: equal, or both
    a deadline set relative to now, a few seconds apart."""
    if want == got:
        return True
    if not (want.startswith(b":") and got.startswith(b":")):
        return False
    w, g = int(want[1:]), int(got[1:])
    if min(w, g) <= 0 or any(abs(w * unit_ms - a) <= 1000 for a in ABSOLUTE_MS):
        return False
    return abs(w - g) * unit_ms <= 5000


def same_reply(cmd, want, got):
    name = cmd[0].upper()
    if name in (b"TTL", b"PTTL"):
        return ttl_class(want) == ttl_class(got)
    if name in (b"EXPIRETIME", b"PEXPIRETIME"):
        return same_deadline(1000 if name == b"EXPIRETIME" else 1, want, got)
    return want == got


def raw_exchange(port, data, results, slot, idle=0.3):
    """Send `data` on a new connection; what comes back until the server
    closes or is idle for `idle` s, and whether it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    s.settimeout(idle)
    out, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    s.close()
    results[slot] = (out, closed)


def run_raw_cases(redis_port, kv_port):
    """RAW_CASES against both servers at once; the number that differ."""
    failed = 0
    for name, data in RAW_CASES:
        results = [None, None]
        threads = [threading.Thread(target=raw_exchange, args=(port, data, results, i))
                   for i, port in enumerate((redis_port, kv_port))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (want, want_closed), (got, got_closed) = results
        if (want, want_closed) != (got, got_closed):
            failed += 1
            print("RAW MISMATCH: %s: sent %r" % (name, data[:120]))
            print("  redis-server: %r%s" % (want[:300], " (closed)" if want_closed else ""))
            print("  kv:           %r%s" % (got[:300], " (closed)" if got_closed else ""))
    return failed


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
        failed = run_raw_cases(redis_port, kv_port)
        print("kv differential: %d raw protocol cases, %d differ" % (len(RAW_CASES), failed))
        if failed:
            return 1
        redis, kv = Conn(redis_port), Conn(kv_port)
        for c in (redis, kv):
            c.run([[b"FLUSHALL"]])
        history = []
        sent = 0
        deadline = time.monotonic() + 50
        while sent < opts.commands and time.monotonic() < deadline:
            batch = []
            for _ in range(rng.choice([1, 1, 2, 5, 20, 50])):
                cmd = random_command(rng)
                if cmd[0].upper() == b"DBSIZE":
                    # Reading every key deletes the overdue ones on both.
                    batch.append([b"EXISTS"] + KEYS)
                batch.append(cmd)
            want, got = redis.run(batch), kv.run(batch)
            for cmd, w, g in zip(batch, want, got):
                history.append(cmd)
                if not same_reply(cmd, w, g):
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
