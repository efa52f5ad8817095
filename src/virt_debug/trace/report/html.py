"""The HTML report: one self-contained file (inline CSS and JS, no external resource)
with the findings and a per-thread timeline that marks the failures."""

import os
import time as _time
from typing import Any

import jinja2

from virt_debug.trace.analysis import Analysis

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("virt_debug.trace.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _clock(when: float | None) -> str:
    if when is None:
        return "-"
    if when < 10**8:
        return f"+{when:.6f}s"
    return _time.strftime("%H:%M:%S", _time.localtime(when)) + f"{when % 1:.6f}"[1:]


def _timeline(analysis: Analysis) -> dict[str, Any]:
    """The data the page's script draws: offsets in seconds (or line numbers)."""
    start = analysis.start_time
    timed = start is not None

    def at(time: float | None, line: int) -> float:
        if start is None or time is None:
            return float(line)
        return round(time - start, 6)

    lanes = []
    for lane in analysis.timeline:
        lanes.append(
            {
                "tid": lane.tid,
                "name": lane.name or "",
                "omitted": lane.omitted,
                "calls": [
                    [at(t, line), round(d or 0.0, 6), name, errno or "", line]
                    for t, d, name, errno, line in lane.calls
                ],
                "marks": [
                    [at(m.time, m.line), m.kind, m.label[:200], m.line]
                    for m in lane.marks
                ],
            }
        )
    return {"timed": timed, "lanes": lanes}


def render_html(analysis: Analysis) -> str:
    template = _ENV.get_template("report.html.j2")
    return template.render(
        a=analysis,
        clock=_clock,
        basename=os.path.basename,
        timeline=_timeline(analysis),
        failed_total=sum(g.count for g in analysis.failures),
    )
