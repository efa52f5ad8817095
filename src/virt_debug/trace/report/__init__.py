"""Reports of an ``Analysis``: terminal text, JSON, self-contained HTML, Perfetto."""

from virt_debug.errors import UsageError
from virt_debug.trace.analysis import Analysis

FORMATS = ("text", "json", "html", "perfetto")


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

        return render_text(analysis, color=color, width=width, verbose=verbose)
    if fmt == "json":
        from virt_debug.trace.report.jsonout import render_json

        return render_json(analysis)
    if fmt == "html":
        from virt_debug.trace.report.html import render_html

        return render_html(analysis)
    if fmt == "perfetto":
        from virt_debug.trace.report.perfetto import render_perfetto

        return render_perfetto(analysis)
    raise UsageError(
        f"unknown report format {fmt!r}", f"use one of {', '.join(FORMATS)}"
    )
