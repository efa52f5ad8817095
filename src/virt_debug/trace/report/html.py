"""The HTML report: one self-contained file (inline CSS and JS, no external resource)
with the findings and a per-thread timeline that marks the failures."""

import math
import os
from typing import Any

import jinja2

from virt_debug.trace.analysis import Analysis
from virt_debug.trace.noise import is_quiet_call, is_stderr_write
from virt_debug.trace.report import HEALTHY, clock, monitor_gap, ran_normally

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("virt_debug.trace.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _timeline(analysis: Analysis) -> dict[str, Any]:
    """The data the page's script draws: offsets in seconds (or line numbers)."""
    start = analysis.start_time
    timed = start is not None

    def at(time: float | None, line: int) -> float:
        # A time a hostile trace made infinite is placed by its line, like no time.
        if start is None or time is None or not math.isfinite(time - start):
            return float(line)
        return round(time - start, 6)

    def span(duration: float | None) -> float:
        return round(duration, 6) if duration and math.isfinite(duration) else 0.0

    lanes = []
    for lane in analysis.timeline:
        lanes.append(
            {
                "tid": lane.tid,
                "name": lane.name or "",
                "omitted": lane.omitted,
                "calls": [
                    [at(t, line), span(d), name, errno or "", line]
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
    said = bool(analysis.qemu_stderr.strip())
    return template.render(
        a=analysis,
        clock=clock,
        basename=os.path.basename,
        timeline=_timeline(analysis),
        failed_total=sum(g.count for g in analysis.failures),
        healthy=ran_normally(analysis),
        healthy_text=HEALTHY,
        said=said,
        quiet=lambda text: is_quiet_call(text) or (said and is_stderr_write(text)),
        monitor_gap=monitor_gap(analysis),
    )
