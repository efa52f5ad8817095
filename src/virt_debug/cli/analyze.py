"""``virt-debug analyze``: explain a trace you already have."""

import logging
import os
import sys
from pathlib import Path

import click
from rich.console import Console

from virt_debug.cli.main import printable
from virt_debug.errors import TraceInputError, UsageError
from virt_debug.trace import analyze_launches
from virt_debug.trace.parse import trace_files
from virt_debug.trace.report import FORMATS, render_launches


@click.command(
    "analyze", context_settings={"help_option_names": ["-h", "--help"]}
)  # fmt: skip
@click.argument("traces", nargs=-1, metavar="TRACE_OR_DIR...")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for the terminal, json for scripts, html for a browser, perfetto "
    "for ui.perfetto.dev or chrome://tracing.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the report to FILE instead of standard output.",
)
@click.option(
    "--no-redact",
    is_flag=True,
    help="Keep secrets (master key contents, monitor passwords) in the report. "
    "Never share such a report.",
)
@click.option(
    "--verbose",
    "verbose",
    is_flag=True,
    help="Text report: also list the expected failures and every file opened.",
)
@click.option(
    "--width",
    type=click.IntRange(40, 400),
    help="Text report width (default: terminal).",
)
def analyze(
    traces: tuple[str, ...],
    fmt: str,
    output: Path | None,
    no_redact: bool,
    verbose: bool,
    width: int | None,
) -> None:
    """Explain why QEMU failed, from strace output.

    TRACE_OR_DIR is a strace output file (strace -f -o FILE), a set written with
    -ff, or a directory virt-debug run collected; several are read in turn.
    A folder holding several launches (each TIME-PID directory of strace.log,
    status, argv...) gets one report per launch, each in turn.
    The report says how QEMU ended, its own error message, the likely cause
    with the trace lines that show it, the failed calls (expected ones folded),
    threads, system calls and files. Secrets are redacted unless --no-redact.

    \b
    Examples:
        virt-debug analyze ./virt-debug-out/mydom-20261203-101500/20261203-101502-4242/
        virt-debug analyze ./virt-debug-out/mydom-20261203-101500/   # each launch
        virt-debug analyze qemu.strace --verbose
        zcat qemu.strace.gz | virt-debug analyze -
        virt-debug analyze qemu.strace -f json -o report.json
        virt-debug analyze qemu.strace -f html -o report.html
        virt-debug analyze qemu.strace -f perfetto -o trace.json   # ui.perfetto.dev
    """
    if not traces:
        raise UsageError(
            "no trace given", "name a strace output file or directory to analyse"
        )
    # "-": the trace comes on standard input (`zcat trace.gz | virt-debug analyze -`).
    traces = tuple("/dev/stdin" if trace == "-" else trace for trace in traces)
    if output is not None:
        _refuse_overwriting_a_trace(output, traces)
    progress = Console(stderr=True)
    with progress.status("Reading the trace…", spinner="dots"):
        launches = analyze_launches(list(traces), redact=not no_redact)

    to_terminal = output is None and sys.stdout.isatty()
    if width is None:
        width = Console().width if to_terminal else 80
    color = to_terminal and "NO_COLOR" not in os.environ
    text = render_launches(launches, fmt, color=color, width=width, verbose=verbose)

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(
            f"cannot write {output}: {e.strerror}", "choose a writable path for -o"
        ) from e
    if logging.getLogger("virt_debug").getEffectiveLevel() <= logging.WARNING:
        # The path is the user's text: no markup, no control characters.
        where = printable(str(output))
        click.echo(f"Wrote the {fmt} report to {where}", err=True)


def _refuse_overwriting_a_trace(output: Path, traces: tuple[str, ...]) -> None:
    # The report is written after the trace is read: over the trace, it would
    # destroy the only copy of what it explains. A directory names its files.
    try:
        found = [str(p) for group in trace_files(traces) for p in group]
    except TraceInputError:
        found = []  # the analysis says what is wrong with the input
    for trace in [*traces, *found]:
        try:
            same = output.exists() and os.path.samefile(output, trace)
        except OSError:
            continue
        if same:
            raise UsageError(
                f"-o {output} is the trace {trace} itself",
                "write the report to another file",
            )


COMMANDS = [analyze]
