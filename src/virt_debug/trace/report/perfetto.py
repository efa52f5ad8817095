"""A Chrome trace-event file (JSON object format) that ui.perfetto.dev and
chrome://tracing open: one track per thread, grouped by process.

Each call of the timeline is a complete event (``ph: "X"``, its ``-T`` duration;
a call without one gets a sliver so it stays visible); failures, signals, execs and
exits are instant events (``ph: "i"``); process and thread names are metadata events
(``ph: "M"``). Timestamps are microseconds since the trace's first record. A trace
without timestamps is laid out by line number, one microsecond per line.
"""

import math
from typing import Any

from virt_debug.trace.analysis import Analysis
from virt_debug.trace.report import finite_json

_SLIVER_US = 1.0


def trace_events(analysis: Analysis) -> dict[str, Any]:
    a = analysis
    start = a.start_time or 0.0
    tgid_of = {t.tid: t.tgid for t in a.threads}
    events: list[dict[str, Any]] = []

    def ts(time: float | None, line: int) -> float:
        # A time a hostile trace made infinite is placed by its line, like no time.
        if time is None or not math.isfinite(time - start):
            return float(line)
        return round((time - start) * 1e6, 3)

    for t in a.threads:
        if t.tid == t.tgid:
            name = t.execs[-1].rsplit("/", 1)[-1] if t.execs else (t.name or "process")
            events.append(_meta("process_name", t.tgid, t.tid, name))
        events.append(
            _meta("thread_name", t.tgid, t.tid, f"{t.name or 'thread'} {t.tid}")
        )

    for lane in a.timeline:
        pid = tgid_of.get(lane.tid, lane.tid)
        for time, duration, name, errno, line in lane.calls:
            event: dict[str, Any] = {
                "name": name,
                "cat": "syscall" if errno is None else "syscall,failed",
                "ph": "X",
                "ts": ts(time, line),
                "dur": _dur(duration),
                "pid": pid,
                "tid": lane.tid,
                "args": {"line": line},
            }
            if errno is not None:
                event["args"]["errno"] = errno
            events.append(event)
        for mark in lane.marks:
            events.append(
                {
                    "name": mark.label[:200],
                    "cat": mark.kind,
                    "ph": "i",
                    "s": "t",
                    "ts": ts(mark.time, mark.line),
                    "pid": pid,
                    "tid": lane.tid,
                    "args": {"line": mark.line, "kind": mark.kind},
                }
            )
        if lane.omitted:
            events.append(
                {
                    "name": f"{lane.omitted} calls left out here",
                    "cat": "note",
                    "ph": "i",
                    "s": "t",
                    "ts": ts(lane.calls[-1][0] if lane.calls else None, 0),
                    "pid": pid,
                    "tid": lane.tid,
                }
            )

    for message in a.monitor:
        verb = "received" if message.direction == "in" else "sent"
        events.append(
            {
                "name": f"monitor {verb}",
                "cat": "monitor",
                "ph": "i",
                "s": "t",
                "ts": ts(message.time, message.line),
                "pid": tgid_of.get(message.tid, message.tid),
                "tid": message.tid,
                "args": {
                    "line": message.line,
                    "fd": message.fd,
                    "message": message.text,
                },
            }
        )

    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "tool": "virt-debug",
            "sources": ", ".join(a.sources),
            "redacted": str(a.redacted).lower(),
            "start_time": str(a.start_time),
        },
    }


def _dur(duration: float | None) -> float:
    if not duration or not math.isfinite(duration):
        return _SLIVER_US
    return round(duration * 1e6, 3)


def _meta(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def render_perfetto(analysis: Analysis) -> str:
    return (
        finite_json(trace_events(analysis), separators=(",", ":"), ensure_ascii=False)
        + "\n"
    )
