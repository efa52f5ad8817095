"""The JSON report: ``Analysis`` as a stable, documented document (docs/trace-json.md).

Field names and meanings only change with ``schema_version``; new fields may appear
within a version. Times are seconds (floats) as in the trace: epoch seconds for
``-t``/``-tt``/``-ttt`` traces, seconds since the start for ``-r``; ``offset`` fields
are seconds since the trace's first timed record.
"""

from dataclasses import asdict
from typing import Any

from virt_debug.trace.analysis import Analysis
from virt_debug.trace.report import finite_json, ran_normally


def to_dict(analysis: Analysis) -> dict[str, Any]:
    a = analysis
    data = asdict(a)
    out: dict[str, Any] = {
        "schema_version": a.schema_version,
        "tool": "virt-debug",
        "sources": a.sources,
        "redacted": a.redacted,
        "redacted_calls": a.redacted_calls,
        "summary": {
            "events": a.events,
            "syscalls": a.syscalls_total,
            "threads": len(a.threads),
            "start_time": a.start_time,
            "end_time": a.end_time,
            "duration": (
                a.end_time - a.start_time
                if a.start_time is not None and a.end_time is not None
                else None
            ),
            "has_durations": a.has_durations,
            "unparsed_lines": a.unparsed_count,
            "failed_calls": sum(g.count for g in a.failures),
            "expected_failures": a.expected_count,
            "ran_normally": ran_normally(a),
        },
        "qemu": {"pid": a.qemu_pid, "argv": a.qemu_argv, "stderr": a.qemu_stderr},
        "launch": {
            "directory": a.launch_dir,
            "stderr_file": a.stderr_file,
            "not_traced": a.not_traced,
            "status": a.launch_status,
        },
        "ended": data["ended"],
        "hints": data["hints"],
        "failures": data["failures"],
        "expected_failures": data["expected"],
        "threads": data["threads"],
        "syscalls": data["syscalls"],
        "files": data["files"],
        "timeline": [
            {
                "tid": lane.tid,
                "name": lane.name,
                "omitted": lane.omitted,
                # [time, duration, syscall, errno, line]: compact, there may be many
                "calls": [list(c) for c in lane.calls],
                "marks": [asdict(m) for m in lane.marks],
            }
            for lane in a.timeline
        ],
        "monitor": data["monitor"],
        "secret_reads": data["secret_reads"],
        "unparsed": data["unparsed"],
        "notes": a.notes,
    }
    for rank, hint in enumerate(out["hints"], 1):
        hint["rank"] = rank
    for stat in out["syscalls"]:
        if stat["seconds"] is not None:
            stat["seconds"] = round(stat["seconds"], 6)
    return out


def render_json(analysis: Analysis) -> str:
    return finite_json(to_dict(analysis), indent=1, ensure_ascii=False) + "\n"
