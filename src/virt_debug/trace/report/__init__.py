"""Reports of an ``Analysis``: terminal text, JSON, self-contained HTML, Perfetto.

Whatever a trace holds ends up in these reports, and a trace is not trusted: file
names need not be UTF-8 (they reach us as surrogate escapes), timestamps can be
absurd, and strings carry any byte. The helpers here keep each format whole.
"""

import json
import math
import re
import time as _time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from virt_debug.errors import UsageError
from virt_debug.trace.analysis import SCHEMA_VERSION, Analysis

if TYPE_CHECKING:
    from virt_debug.trace import Launch

FORMATS = ("text", "json", "html", "perfetto")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def render(
    analysis: Analysis,
    fmt: str = "text",
    *,
    color: bool = False,
    width: int = 80,
    verbose: bool = False,
    base: str | None = None,
) -> str:
    """The report of ``analysis`` in ``fmt`` (one of ``FORMATS``), as a string.
    ``base``: the text report names evidence files relative to it."""
    if fmt == "text":
        from virt_debug.trace.report.text import render_text

        text = render_text(
            analysis, color=color, width=width, verbose=verbose, base=base
        )
    elif fmt == "json":
        from virt_debug.trace.report.jsonout import render_json

        text = render_json(analysis)
    elif fmt == "html":
        from virt_debug.trace.report.html import render_html

        text = render_html(analysis)
    elif fmt == "perfetto":
        from virt_debug.trace.report.perfetto import render_perfetto

        text = render_perfetto(analysis)
    else:
        raise UsageError(
            f"unknown report format {fmt!r}", f"use one of {', '.join(FORMATS)}"
        )
    return encodable(text, json_string=fmt in ("json", "perfetto"))


def render_launches(
    launches: "Sequence[Launch]",
    fmt: str = "text",
    *,
    color: bool = False,
    width: int = 80,
    verbose: bool = False,
) -> str:
    """The report of what ``analyze_launches`` found: one launch's report as
    ``render`` writes it; for several, each in turn (text: under a heading of
    its own; JSON: ``{"schema_version", "tool", "launches": [report, ...]}``).
    HTML and Perfetto reports show one launch: for several, name one of them."""
    if len(launches) == 1:
        only = launches[0]
        return render(only.analysis, fmt, color=color, width=width, verbose=verbose)
    if fmt == "json":
        from virt_debug.trace.report.jsonout import to_dict

        reports = []
        for launch in launches:
            report = to_dict(launch.analysis)
            report["label"] = launch.label
            reports.append(report)
        data = {"schema_version": SCHEMA_VERSION, "tool": "virt-debug"}
        data["launches"] = reports
        text = finite_json(data, indent=1, ensure_ascii=False) + "\n"
        return encodable(text, json_string=True)
    if fmt != "text":
        names = ", ".join(launch.label for launch in launches)
        raise UsageError(
            f"{len(launches)} launches found ({names}): the {fmt} report shows one",
            "name one launch directory, or use --format text or json",
        )
    from virt_debug.trace.report.terminal import printable

    parts = []
    for n, launch in enumerate(launches, 1):
        rule = "=" * min(width, 80)
        label = printable(launch.label)
        head = f"{rule}\nLaunch {n} of {len(launches)}: {label}\n{rule}\n"
        body = render(
            launch.analysis,
            "text",
            color=color,
            width=width,
            verbose=verbose,
            base=launch.base or None,
        )
        parts.append(encodable(head) + body)
    return "\n".join(parts)


def encodable(text: str, *, json_string: bool = False) -> str:
    """``text`` without lone surrogates (a file name's bytes that are not UTF-8,
    decoded by Python with surrogateescape): they become ``\\xNN`` as strace writes
    such bytes, so the report can be written as UTF-8. In JSON they only occur
    inside strings, where the backslash itself must be escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        slash = "\\\\" if json_string else "\\"
        return _SURROGATE.sub(lambda m: slash + _byte_escape(m.group()), text)
    return text


def _byte_escape(char: str) -> str:
    code = ord(char)
    return f"x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"u{code:04x}"


def finite_json(data: Any, **options: Any) -> str:
    """``json.dumps`` that never writes ``Infinity`` or ``NaN`` (not JSON): a time
    or duration float() read as infinite from a hostile trace becomes null."""
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# Signals another process sends to stop QEMU (libvirt sends SIGTERM). Not SIGKILL:
# the OOM killer sends it too, and a QEMU that needed it did not stop as asked.
_STOP_SIGNALS = frozenset({"SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"})
MIN_RUN = 2.0  # seconds QEMU must have run for a stop by a signal to be a normal one
HEALTHY = "QEMU ran and stopped normally; nothing failed that explains a problem"
_INBOUND = ("recvmsg", "read", "readv", "recvfrom", "recv")


def ran_normally(analysis: Analysis) -> bool:
    """Whether QEMU exited with 0, or was stopped by a signal from outside after
    running a while, with no likely cause of a problem found: a healthy run."""
    a, ended = analysis, analysis.ended
    if ended is None or a.hints or a.qemu_pid is None:
        return False
    if ended.how == "exited" and ended.code == 0:
        return True
    ran = a.offset(ended.time)
    return (
        ended.how == "killed"
        and ended.signal in _STOP_SIGNALS
        and not ended.core_dumped
        and ran is not None
        and ran >= MIN_RUN
    )


def monitor_gap(analysis: Analysis) -> str | None:
    """Why the monitor messages QEMU received are missing, when they are: the
    wrapper's default filter leaves the calls that read them out."""
    left_out = [name for name in _INBOUND if name in analysis.not_traced]
    if not left_out or any(m.direction == "in" for m in analysis.monitor):
        return None
    return (
        f"commands from libvirt are not in this trace: {'/'.join(left_out)} "
        "were not traced; use --full"
    )


def clock(when: float | None) -> str:
    """A record's time for people: time of day, or ``+offset`` for ``-r`` traces."""
    if when is None or not math.isfinite(when):
        return "-"
    # Relative traces (-r) start near zero: show the offset, not a date.
    if when < 10**8:
        return f"+{when:.6f}s"
    try:
        day = _time.strftime("%H:%M:%S", _time.localtime(when))
    except (OverflowError, OSError, ValueError):
        return f"{when:.6g}"  # no calendar has it: show the number strace printed
    return day + f"{when % 1:.6f}"[1:]
