#!/usr/bin/env python3
"""Draw docs/turn.svg: the seven phases of a turn, and for each kind of work
queued in each phase whether it runs in this turn or the next.

Run from anywhere: `python3 docs/turn_svg.py`. Standard library only; the
SVG is written by hand so the picture has no build dependency. The table
below is the picture's content: change the loop, change the table, re-run.
Every cell is a fact the tests check (tests/phases.rs, tests/dispatch_order.rs,
tests/tasks.rs, tests/timers.rs, tests/predict_order.rs).
"""

from pathlib import Path
from xml.sax.saxutils import escape

PHASES = [
    ("1", "clock", "read lazily"),
    ("2", "timers", "due batch fixed first"),
    ("3", "deferred", "those queued before"),
    ("4", "poll", "sleeps, or 0 if work"),
    ("5", "dispatch", "ready list, in order"),
    ("6", "check", "hooks, then metrics"),
    ("7", "reclaim", "drops closed ones"),
]

# Columns: where the work is queued. The clock, poll and reclaim phases run
# no user callback (reclaim runs only `Drop` code), so nothing is queued there.
COLUMNS = ["between turns", "2 timers", "3 deferred", "5 dispatch", "6 check"]

# (kind of work, [cell per column]); a cell is (runs this turn?, text).
THIS, NEXT = True, False
ROWS = [
    ("timer armed for now", [
        (THIS, "this turn: 2"), (NEXT, "next turn"), (NEXT, "next turn"),
        (NEXT, "next turn"), (NEXT, "next turn")]),
    ("ctx.defer(f)", [
        (THIS, "this turn: 3"), (THIS, "this turn: 3"), (NEXT, "next turn"),
        (NEXT, "next turn"), (NEXT, "next turn")]),
    ("schedule / Reschedule", [
        (THIS, "this turn: 5"), (THIS, "this turn: 5"), (THIS, "this turn: 5"),
        (NEXT, "next turn"), (NEXT, "next turn")]),
    ("task woken (loop thread)", [
        (THIS, "this turn: 5"), (THIS, "this turn: 5"), (THIS, "this turn: 5"),
        (THIS, "5, list's end*"), (NEXT, "next turn")]),
    ("register a source", [
        (THIS, "polled: 4, 5"), (THIS, "polled: 4, 5"), (THIS, "polled: 4, 5"),
        (NEXT, "next poll"), (NEXT, "next poll")]),
    ("close(id)", [
        (THIS, "released: 7"), (THIS, "released: 7"), (THIS, "released: 7"),
        (THIS, "released: 7"), (THIS, "released: 7")]),
]

NOTES = [
    "* a task already polled in this turn waits for the next one: at most one poll a turn.",
    "Work left for the next turn keeps its poll from sleeping (timeout 0), except a registration.",
    "From another thread (channel, Remote, a task's waker): this turn's 5 if the eventfd write",
    "came before this turn's poll returned, else the next turn's.",
]

GREEN, GREEN_EDGE = "#dcf0dc", "#5a9a5a"
ORANGE, ORANGE_EDGE = "#fbe3cc", "#c07a30"
PHASE_FILL, PHASE_EDGE = "#e6eef8", "#4a6a94"
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def text(x, y, s, size=13, anchor="middle", weight="normal", fill="#222"):
    return (f'<text x="{x}" y="{y}" {FONT} font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def rect(x, y, w, h, fill, stroke, rx=6):
    return (f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>')


def draw():
    out = []
    width = 980
    # -- the seven phases, left to right, and the arrow back to the start --
    bw, bh, gap, x0, y0 = 124, 58, 12, 18, 40
    out.append(text(width / 2, 24, "One turn: EventLoop::turn runs these seven phases, in this order",
                    15, weight="bold"))
    for i, (n, name, what) in enumerate(PHASES):
        x = x0 + i * (bw + gap)
        out.append(rect(x, y0, bw, bh, PHASE_FILL, PHASE_EDGE))
        out.append(text(x + bw / 2, y0 + 24, f"{n}. {name}", 14, weight="bold"))
        out.append(text(x + bw / 2, y0 + 44, what, 11))
        if i + 1 < len(PHASES):
            ax = x + bw
            out.append(f'<line x1="{ax + 1}" y1="{y0 + bh / 2}" x2="{ax + gap - 2}" y2="{y0 + bh / 2}" '
                       'stroke="#333" stroke-width="1.5" marker-end="url(#arrow)"/>')
    last_x = x0 + 6 * (bw + gap) + bw / 2
    first_x = x0 + bw / 2
    ly = y0 + bh + 16
    out.append(f'<path d="M {last_x} {y0 + bh} L {last_x} {ly} L {first_x} {ly} L {first_x} {y0 + bh + 3}" '
               'fill="none" stroke="#333" stroke-width="1.5" stroke-dasharray="5 3" marker-end="url(#arrow)"/>')
    out.append(text(width / 2, ly + 15, "run: the next turn (turn(timeout): the caller decides)", 12,
                    fill="#444"))

    # -- the table: kind of work (rows) x phase where it was queued (columns) --
    ty = ly + 62
    label_w, col_w, row_h = 200, 150, 30
    out.append(text(18, ty, "queued …", 13, anchor="start", weight="bold"))
    out.append(text(label_w + 18 + len(COLUMNS) * col_w / 2, ty - 18,
                    "… while this runs: when does it run?", 13, weight="bold"))
    for c, col in enumerate(COLUMNS):
        out.append(text(label_w + 18 + c * col_w + col_w / 2, ty, col, 13, weight="bold"))
    for r, (kind, cells) in enumerate(ROWS):
        y = ty + 12 + r * (row_h + 6)
        out.append(text(18, y + 20, kind, 13, anchor="start"))
        for c, (this_turn, label) in enumerate(cells):
            x = label_w + 18 + c * col_w
            fill, edge = (GREEN, GREEN_EDGE) if this_turn else (ORANGE, ORANGE_EDGE)
            out.append(rect(x + 4, y, col_w - 8, row_h, fill, edge, rx=4))
            out.append(text(x + col_w / 2, y + 20, label, 12))
    ny = ty + 12 + len(ROWS) * (row_h + 6) + 14
    out.append(rect(18, ny - 12, 14, 14, GREEN, GREEN_EDGE, rx=2))
    out.append(text(38, ny, "runs in this turn, in that phase", 12, anchor="start"))
    out.append(rect(290, ny - 12, 14, 14, ORANGE, ORANGE_EDGE, rx=2))
    out.append(text(310, ny, "waits for the next turn", 12, anchor="start"))
    for i, note in enumerate(NOTES):
        out.append(text(18, ny + 22 + i * 17, note, 12, anchor="start", fill="#333"))
    height = ny + 22 + len(NOTES) * 17 + 6

    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/>'
            '</marker></defs>\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n')
    return head + "\n".join(out) + "\n</svg>\n"


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "turn.svg"
    target.write_text(draw())
    print(f"wrote {target}")
