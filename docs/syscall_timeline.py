#!/usr/bin/env python3
"""Merge a traced run's log with `strace` output into one timeline.

Each log line the program writes is a `write(2, ...)` system call in the
strace output, so the two files interleave exactly: every `write(2, ...)` is
replaced by the log line it wrote. Start-up (before the loop's
`epoll_create1`) is left out, and with --short so are the phase lines of the
timer and deferred phases when they had nothing to do.

    cargo build --release --example echo
    RUST_LOG=evloop=trace,echo=info strace -f -o /tmp/echo.strace \\
        target/release/examples/echo 2>/tmp/echo.log
    # elsewhere: talk to it on 127.0.0.1:6000, then Ctrl-C the server
    python3 docs/syscall_timeline.py /tmp/echo.log /tmp/echo.strace --short

Standard library only. Lines starting with `$` are system calls.
"""

import re
import sys


def merge(log_lines, strace_lines, short):
    out, li, started = [], 0, False
    for line in strace_lines:
        m = re.match(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:[\d:.]+\s+)?(.*)$", line)
        call = m.group(1)
        if call.startswith("epoll_create1"):
            started = True
        if not started:
            continue
        if call.startswith("write(2,"):
            text = log_lines[li] if li < len(log_lines) else "?"
            li += 1
            if short and re.search(r"phase (timers \(0 due\)|deferred \(0 queued\))", text):
                continue
            out.append("    " + text)
        elif not re.match(r"(munmap|sigaltstack|exit_group|\+\+\+)", call):
            out.append("$ " + call)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    # "[2026-12-02T16:35:38Z TRACE target] msg" -> "TRACE target] msg"
    log = [re.sub(r"^\[\S+ (\S+)\s+(\S+)\] ", r"\1 \2] ", l.rstrip("\n")) for l in open(args[0])]
    strace = [l.rstrip("\n") for l in open(args[1])]
    print("\n".join(merge(log, strace, "--short" in sys.argv)))


if __name__ == "__main__":
    main()
