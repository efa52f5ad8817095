"""Reports of an ``Analysis``: terminal text, JSON, self-contained HTML, Perfetto.

Whatever a trace holds ends up in these reports, and a trace is not trusted: file
names need not be UTF-8 (they reach us as surrogate escapes), timestamps can be
absurd, and strings carry any byte. The helpers here keep each format whole.
"""

import json
import math
import re
import time as _time
from typing import Any

from virt_debug.errors import UsageError
from virt_debug.trace.analysis import Analysis

FORMATS = ("text", "json", "html", "perfetto")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def render(
    analysis: Analysis,
    fmt: str = "text",
    *,
    color: bool = False,
    width: int = 80,
    verbose: bool = False,
) -> str:
    """The report of ``analysis`` in ``fmt`` (one of ``FORMATS``), as a string."""
    if fmt == "text":
        from virt_debug.trace.report.text import render_text

        text = render_text(analysis, color=color, width=width, verbose=verbose)
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
