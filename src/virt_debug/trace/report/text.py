"""The terminal report: the answer first (how QEMU ended, the likely cause), details
after. Written with rich so it wraps to the terminal's width; colour only when asked.
"""

import dataclasses
import io
import os
import textwrap

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from virt_debug.trace.analysis import Analysis
from virt_debug.trace.evidence import Evidence
from virt_debug.trace.noise import is_quiet_call, is_stderr_write
from virt_debug.trace.report import HEALTHY, clock, monitor_gap, ran_normally
from virt_debug.trace.report.terminal import fit, shown
from virt_debug.trace.results import FailureGroup

TOP = 15
MONITOR_LAST = 10
EVIDENCE_LINES = 3
MAX_FAILURE_ROWS = 30


def render_text(
    analysis: Analysis,
    *,
    color: bool = False,
    width: int = 80,
    verbose: bool = False,
    base: str | None = None,
) -> str:
    """The report; evidence names its file relative to ``base`` when given (the
    folder the user named, holding several launches), else by its base name."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    _Writer(console, shown(analysis), verbose, base).write()
    return out.getvalue()


class _Writer:
    def __init__(
        self, console: Console, analysis: Analysis, verbose: bool, base: str | None
    ) -> None:
        self.c = console
        self.a = analysis
        self.verbose = verbose
        self.base = base
        self.healthy = ran_normally(analysis)

    def write(self) -> None:
        # The answer first (how QEMU ended, the likely cause), then QEMU's message
        # once, what failed, what it did last; the details after.
        self._header()
        self._ended()
        if not self.healthy:
            self._hints()
        self._said()
        self._failures()
        self._last_calls()
        self._command()
        self._monitor()
        self._threads()
        self._syscalls()
        self._files()
        self._footer()

    def heading(self, text: str) -> None:
        self.c.print()
        self.c.print(f"[bold underline]{escape(text)}[/]")

    def _header(self) -> None:
        a = self.a
        span = ""
        if a.start_time is not None and a.end_time is not None:
            span = f", {a.end_time - a.start_time:.3f} s"
        sources = ", ".join(a.sources)
        self.c.print(f"[bold]Trace[/] {escape(sources)}")
        self.c.print(
            f"  {a.syscalls_total:,} calls, {len(a.threads)} threads{span}"
            + (
                f", [yellow]{a.unparsed_count} unreadable lines[/]"
                if a.unparsed_count
                else ""
            )
        )

    def _command(self) -> None:
        a = self.a
        if not a.qemu_argv and not a.not_traced:
            return
        self.heading("Command line")
        if a.qemu_argv:
            cmd = " ".join(a.qemu_argv)
            if len(cmd) > 3 * self.c.width:
                cmd = cmd[: 3 * self.c.width] + " …"
            self.para(f"QEMU pid {a.qemu_pid}: {cmd}", 2, hang=2)
        if a.not_traced:
            # The wrapper's default filter: these calls are absent, not unused.
            self.para(f"not traced: {' '.join(a.not_traced)}", 2, "dim", hang=2)

    def _ended(self) -> None:
        ended = self.a.ended
        self.heading("How it ended")
        if ended is None:
            self.c.print("  no process in the trace")
            return
        who = "QEMU" if self.a.qemu_pid is not None else f"process {ended.pid}"
        if ended.how == "exited":
            style = "green" if ended.code == 0 else "red"
            status = f"[{style}]exited with status {ended.code}[/]"
        elif ended.how == "killed":
            core = " (core dumped)" if ended.core_dumped else ""
            status = f"[red]killed by {ended.signal}{core}[/]"
        else:
            status = "[yellow]still running when the trace ends[/]"
        when = f" at {self._clock(ended.time)}" if ended.time is not None else ""
        self.c.print(f"  {who} {status}{when}")
        if self.a.launch_status is not None:
            self.c.print(f"  Wrapper's status file: {escape(self.a.launch_status)}")
        if self.healthy:
            self.para(HEALTHY + ".", 2, "bold green", hang=2)

    def _said(self) -> None:
        said = self.a.qemu_stderr.strip()
        if not said:
            return
        where = " (its stderr file)" if self.a.stderr_file else ""
        self.heading(f"QEMU said{where}")
        for line in said.splitlines()[-12:]:
            self.para(f"| {line}", 2, hang=2)

    def _last_calls(self) -> None:
        ended = self.a.ended
        if ended is None or ended.tid is None:
            return
        # Signal masks and memory management say nothing unless they failed, and
        # the writes of QEMU's message are quoted under "QEMU said" already.
        said = bool(self.a.qemu_stderr.strip())
        calls = [
            e
            for e in ended.last_calls
            if not is_quiet_call(e.text) and not (said and is_stderr_write(e.text))
        ]
        name = f" ({ended.thread})" if ended.thread else ""
        left = len(ended.last_calls) - len(calls)
        routine = f"; {left} left out (routine calls, QEMU's message)" if left else ""
        self.heading(f"Last calls of thread {ended.tid}{name}{routine}")
        for evidence in calls:
            self._evidence(evidence, indent=2)

    def _hints(self) -> None:
        hints = self.a.hints
        self.heading("Likely causes, ranked" if len(hints) > 1 else "Likely cause")
        if not hints:
            self.c.print("  no known cause matched")
            return
        said = bool(self.a.qemu_stderr.strip())
        for n, hint in enumerate(hints, 1):
            title, advice = hint.title, hint.advice
            agrees = " (QEMU's message agrees)" if hint.confirmed else ""
            if hint.rule == "qemu-error":
                # Its title is QEMU's message: that it agrees with itself says nothing.
                code = self.a.ended.code if self.a.ended else "?"
                title = f"QEMU exited with status {code}; no known cause matched"
                advice, agrees = "QEMU's own message below is the best lead.", ""
            self.para(f"{n}. {title}{agrees}", 2, "bold red", hang=3)
            self.para(advice, 5)
            for evidence in hint.evidence:
                if said and evidence.text.startswith("QEMU stderr ("):
                    # Quoted once, under "QEMU said": here only where it is.
                    evidence = dataclasses.replace(
                        evidence, text="QEMU's message, quoted below"
                    )
                self._evidence(evidence, indent=5)

    def _failures(self) -> None:
        a = self.a
        total = sum(g.count for g in a.failures)
        if not a.failures:
            self.heading("Failed calls")
            self.c.print("  No failed call that matters.")
        else:
            groups = len(a.failures)
            self.heading(
                f"Failed calls: {total} in {groups} group{'' if groups == 1 else 's'}"
            )
        self.c.print(
            f"  {a.expected_count} expected failures folded"
            + (" (listed below)" if self.verbose else " (--verbose lists them)")
        )
        self._group_table(a.failures[:MAX_FAILURE_ROWS], expected=False)
        if len(a.failures) > MAX_FAILURE_ROWS:
            self.c.print(f"  … {len(a.failures) - MAX_FAILURE_ROWS} more groups")
        if self.verbose and a.expected:
            self.heading("Expected failures (folded)")
            self._group_table(a.expected, expected=True)

    def _group_table(self, groups: list[FailureGroup], *, expected: bool) -> None:
        # A path gets a line of its own under its row, shortened in the middle if
        # need be: a table cell would split it anywhere, and nobody could copy it.
        if not groups:
            return
        rows = []
        for g in groups:
            call = f"{g.syscall} {g.request}" if g.request else g.syscall
            last = g.expected or ""
            if not expected:
                name = f" {g.first_thread}" if g.first_thread else ""
                last = f"{self._clock(g.first_time)} {g.first_tid}{name}"
            rows.append((str(g.count), call, g.errno, last, g.path or ""))
        head = ("count", "call", "errno", "why expected" if expected else "first")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

        def line(cells) -> str:
            count, call, errno, last = cells[:4]
            return (
                f"{count:>{widths[0]}}  {call:<{widths[1]}}  "
                f"{errno:<{widths[2]}}  {last}"
            )

        indent = widths[0] + 2
        room = self.c.width - indent
        self.c.print(Text(line(head), style="bold"), no_wrap=True, crop=True)
        for row in rows:
            self.para(line(row), 0, hang=indent + widths[1] + widths[2] + 4)
            if row[4]:
                path = " " * indent + fit(row[4], room)
                self.c.print(Text(path), no_wrap=True, crop=True)

    def _monitor(self) -> None:
        a = self.a
        if a.secret_reads:
            self.heading(f"Secret files read: {len(a.secret_reads)}")
            for read in a.secret_reads:
                where = f"{self._where(read.source or self._source())}:{read.line}"
                shown = "<redacted>" if read.content is None else repr(read.content)
                what = f"{read.tid} read {read.size} bytes of {read.path}"
                self.para(f"{where}  {what}: {shown}", 2, hang=4)
        if not a.monitor:
            return
        count = len(a.monitor) if self.verbose else MONITOR_LAST
        self.heading(
            f"Monitor messages: last {min(count, len(a.monitor))} of {len(a.monitor)}"
        )
        gap = monitor_gap(a)
        if gap:
            self.para(gap, 2, "yellow", hang=2)
        self.para(
            "-> QEMU received it (a command); <- QEMU sent it (a reply or an event)",
            2,
            "dim",
            hang=2,
        )
        for message in a.monitor[-count:]:
            arrow = "->" if message.direction == "in" else "<-"
            cut = " [...]" if message.truncated else ""
            self.para(f"{message.line} {arrow} {message.text}{cut}", 2, hang=4)

    def _source(self) -> str:
        return self.a.sources[0] if self.a.sources else ""

    def _threads(self) -> None:
        threads = self.a.threads
        self.heading(f"Threads and processes: {len(threads)}")
        by_parent: dict[int | None, list] = {}
        known = {t.tid for t in threads}
        for t in threads:
            parent = t.parent if t.parent in known else None
            by_parent.setdefault(parent, []).append(t)
        shown = 0

        def add(node: Tree, tid: int | None, depth: int) -> None:
            nonlocal shown
            for t in by_parent.get(tid, []):
                shown += 1
                if shown > 200:
                    return
                child = node.add(self._thread_label(t))
                if depth < 30:
                    add(child, t.tid, depth + 1)

        tree = Tree("", hide_root=True, guide_style="dim")
        add(tree, None, 0)
        self.c.print(tree)
        if shown > 200:
            self.c.print(f"  … {len(threads) - 200} more")

    def _thread_label(self, t) -> str:
        kind = "thread" if t.is_thread else "process"
        name = f" {escape(t.name)}" if t.name else ""
        life = ""
        if t.first_time is not None and t.last_time is not None:
            start = self.a.offset(t.first_time) or 0.0
            life = f" +{start:.3f}s…+{(self.a.offset(t.last_time) or 0.0):.3f}s"
        ended = f", {escape(t.ended)}" if t.ended else ""
        prog = f" {escape(os.path.basename(t.execs[-1]))}" if t.execs else ""
        return f"{kind} {t.tid}{name}{prog}{life}, {t.calls} calls{ended}"

    def _syscalls(self) -> None:
        stats = self.a.syscalls
        self.heading(f"System calls: top {min(TOP, len(stats))} of {len(stats)}")
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
        table.add_column("syscall")
        table.add_column("calls", justify="right")
        table.add_column("errors", justify="right")
        if self.a.has_durations:
            table.add_column("seconds", justify="right")
        for s in stats[:TOP]:
            row = [s.name, f"{s.calls:,}", f"{s.errors:,}"]
            if self.a.has_durations:
                row.append(f"{s.seconds or 0.0:.6f}")
            table.add_row(*row)
        self.c.print(table)

    def _files(self) -> None:
        files = self.a.files
        self.heading(f"Files opened: {len(files)}")
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
        table.add_column("ok", justify="right")
        table.add_column("failed", justify="right")
        table.add_column("path", no_wrap=True)
        limit = len(files) if self.verbose else TOP
        shown = files[:limit]
        # The two counts and their spaces; the path gets the rest, whole or
        # shortened in the middle, never split over lines.
        left = max([2, *(len(str(f.ok)) for f in shown)])
        left += max([6, *(len(str(f.failed)) for f in shown)]) + 2
        for f in shown:
            path = fit(f.path, self.c.width - left)
            table.add_row(str(f.ok), str(f.failed), escape(path))
        self.c.print(table)
        if len(files) > limit:
            self.c.print(f"  … {len(files) - limit} more (--verbose lists all)")

    def _footer(self) -> None:
        a = self.a
        if a.unparsed_count:
            self.heading(f"Lines that could not be read: {a.unparsed_count}")
            for evidence in a.unparsed[: 50 if self.verbose else 5]:
                self._evidence(evidence, indent=2)
        if a.notes:
            self.heading("Notes")
            for note in a.notes:
                self.c.print(f"  {escape(note)}", overflow="fold")
        self.c.print()
        if a.redacted:
            self.c.print(
                f"[dim]Secrets redacted ({a.redacted_calls} calls hidden); "
                "--no-redact shows them.[/]"
            )
        else:
            self.c.print("[yellow]Not redacted: this report may contain secrets.[/]")

    def _evidence(self, evidence: Evidence, indent: int) -> None:
        # At most three wrapped lines each: the file and line say where to read more.
        where = f"{self._where(evidence.source)}:{evidence.line}"
        body = where + "  " + evidence.text.replace("\n", " ")
        lines = textwrap.wrap(
            body,
            width=self.c.width,
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + 4),
            break_on_hyphens=False,
        )
        if len(lines) > EVIDENCE_LINES:
            lines = lines[:EVIDENCE_LINES]
            lines[-1] = lines[-1][: self.c.width - 1] + "…"
        for n, line in enumerate(lines):
            text = Text(line)
            if n == 0:
                text.stylize("dim", indent, indent + len(where))
            self.c.print(text, no_wrap=True, crop=True)

    def para(self, text: str, indent: int, style: str = "", hang: int = 0) -> None:
        """Wrapped text whose continuation lines keep the indent (plus ``hang``)."""
        lines = textwrap.wrap(
            text,
            width=self.c.width,
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + hang),
            break_on_hyphens=False,
        )
        for line in lines:
            self.c.print(Text(line, style=style), no_wrap=True, crop=True)

    def _where(self, source: str) -> str:
        if self.base:
            # Several launches: the launch directory tells them apart.
            return os.path.relpath(source, self.base)
        return os.path.basename(source)

    def _clock(self, when: float | None) -> str:
        return clock(when)
