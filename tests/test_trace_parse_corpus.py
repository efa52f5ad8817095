"""The reader and tracker on the sample corpus: every strace form, its expected result.

Each sample under tests/data/traces/formats/ (a file, or a directory for -ff sets)
has a ``<name>.expected.json``: event counts by type, the exact unparsed lines, the
threads with their names and ends, and a few specific calls. After regenerating the
samples, ``python tests/test_trace_parse_corpus.py --update`` rewrites the expected
files from the current reader; review the diff before keeping it.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from virt_debug.trace.model import Exit, Syscall, Unparsed
from virt_debug.trace.parse import ReadStats, iter_events
from virt_debug.trace.track import Tracker

CORPUS = Path(__file__).parent / "data" / "traces" / "formats"
HAND = CORPUS / "hand"  # written by hand: forms strace 6.1 does not print here
SAMPLES = sorted(
    p
    for p in [*CORPUS.iterdir(), *HAND.iterdir()]
    if (p.is_dir() and p != HAND) or p.suffix == ".strace"
)
CALL_FIELDS = ("pid", "name", "retval", "errno", "path", "fd_path", "resumed_only")


def read(sample: Path) -> dict:
    """What the reader and tracker make of ``sample``, in the expected files' shape."""
    stats = ReadStats()
    tracker = Tracker()
    counts: Counter = Counter()
    unparsed = []
    calls = []
    times = []
    for event in iter_events([sample], stats=stats):
        tracker.feed(event)
        counts[type(event).__name__] += 1
        if isinstance(event, Unparsed):
            unparsed.append([Path(event.source).name, event.line_no, event.text])
        elif isinstance(event, Syscall) and _notable(event):
            call = {f: getattr(event, f) for f in CALL_FIELDS}
            call["line"] = [Path(event.source).name, event.line_no]
            if event.injected:
                call["injected"] = event.injected
            if event.stack:
                call["stack_frames"] = len(event.stack)
            calls.append(call)
        if getattr(event, "time", None) is not None:
            times.append(event.time)

    threads = {
        str(t.tid): {
            "tgid": t.tgid,
            "parent": t.parent,
            "is_thread": t.is_thread,
            "comm": t.comm,
            "ended": t.ended,
        }
        for t in tracker.threads.values()
    }
    return {
        "counts": dict(sorted(counts.items())),
        "lines": stats.lines,
        "unparsed": unparsed,
        "threads": threads,
        "calls": calls[:40],
        "span_seconds": round(max(times) - min(times), 3) if times else None,
    }


def _notable(call: Syscall) -> bool:
    return bool(
        call.errno
        or call.resumed_only
        or call.injected
        or call.name.startswith(("execve", "clone", "fork", "vfork", "syscall_"))
        or (call.fd_path and call.name in ("read", "write", "close", "dup"))
    )


@pytest.mark.parametrize(
    "sample", SAMPLES, ids=[str(p.relative_to(CORPUS)) for p in SAMPLES]
)
def test_sample_reads_as_expected(sample: Path) -> None:
    expected_file = sample.parent / f"{sample.name}.expected.json"
    expected = json.loads(expected_file.read_text())

    got = read(sample)

    assert got == expected


@pytest.mark.parametrize(
    "sample", SAMPLES, ids=[str(p.relative_to(CORPUS)) for p in SAMPLES]
)
def test_every_line_is_accounted_for(sample: Path) -> None:
    stats = ReadStats()
    events = list(iter_events([sample], stats=stats))

    files = [sample] if sample.is_file() else sorted(sample.iterdir())
    assert stats.lines == sum(len(f.read_bytes().split(b"\n")) - 1 for f in files)
    assert stats.lines == (
        stats.blank + stats.records + stats.joined + stats.frames + stats.unparsed
    )
    assert stats.unparsed == sum(isinstance(e, Unparsed) for e in events)


@pytest.mark.parametrize(
    "sample", SAMPLES, ids=[str(p.relative_to(CORPUS)) for p in SAMPLES]
)
def test_counts_agree_with_grep(sample: Path) -> None:
    """Independent of the reader: what a grep over the raw text counts."""
    files = [sample] if sample.is_file() else sorted(sample.iterdir())
    text = "\n".join(f.read_text(errors="replace") for f in files)
    exits = len(re.findall(r"\+\+\+ (exited with|killed by)", text))
    resumed = len(re.findall(r"<\.\.\. ?\w+ resumed>", text))
    unfinished = len(re.findall(r"(?<!resumed>) <unfinished \.\.\.>$", text, re.M))

    events = list(iter_events([sample]))
    calls = [e for e in events if isinstance(e, Syscall)]

    assert sum(isinstance(e, Exit) for e in events) == exits
    assert sum(c.resumed_only for c in calls) <= resumed
    assert unfinished - sum(c.result == "<unfinished ...>" for c in calls) == (
        resumed - sum(c.resumed_only for c in calls)
    )


def test_ff_set_is_merged_in_time_order() -> None:
    events = list(iter_events([CORPUS / "ff_tt"]))

    times = [e.time for e in events if getattr(e, "time", None) is not None]
    assert len({e.source for e in events}) == 3
    assert times == sorted(times)


def _update() -> None:
    for sample in SAMPLES:
        out = sample.parent / f"{sample.name}.expected.json"
        result = read(sample)
        parts = []
        for key, value in result.items():
            if isinstance(value, list) and value:
                items = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in value)
                parts.append(f' "{key}": [\n  {items}\n ]')
            elif isinstance(value, dict) and value:
                items = ",\n  ".join(
                    f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                    for k, v in value.items()
                )
                parts.append(f' "{key}": {{\n  {items}\n }}')
            else:
                parts.append(f' "{key}": {json.dumps(value)}')
        out.write_text("{\n" + ",\n".join(parts) + "\n}\n")
        print("wrote", out)


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    _update()
