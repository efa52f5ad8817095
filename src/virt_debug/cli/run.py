"""``virt-debug run``: trace the next start of a local libvirt domain."""

import re
import time
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from virt_debug.backends.libvirt import connection, session
from virt_debug.backends.libvirt import domain as domains
from virt_debug.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
WIDE = 200


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``90``, ``90s``, ``5m``, ``1.5h``; None stays None."""
    if text is None:
        return None
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(
            f"--duration {text!r} is not a duration",
            hint="give seconds, or a number with s, m or h: 30, 45s, 5m, 1h",
        )
    return float(match.group(1)) * _UNIT[match.group(2)]


def default_output(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("virt-debug-out") / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class RichProgress(session.Progress):
    """Each phase as a line on stderr, with a live status while it lasts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._name = ""
        self._since = time.monotonic()

    def phase(self, name: str, detail: str = "") -> None:
        now = time.monotonic()
        if self._name and name != self._name:
            self.console.print(f"  {self._name} done in {now - self._since:.1f} s")
        if name != self._name:
            self._since = now
        self._name = name
        text = f"[bold]{name}[/bold] {escape(detail)}"
        self.console.print(text)
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def tracing(self, elapsed: float, trace_bytes: int) -> None:
        if self._status is not None:
            self._status.update(
                f"[bold]tracing[/bold] {elapsed:.0f} s, trace {_size(trace_bytes)}"
                " (Ctrl-C ends it)"
            )

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._name:
            elapsed = time.monotonic() - self._since
            self.console.print(f"  {self._name} done in {elapsed:.1f} s")
            self._name = ""


def execute(
    debugger: str,
    spec: str,
    *,
    uri: str,
    output: Path | None,
    duration: float | None,
    full: bool,
    qemu: str | None,
    extra_args: tuple[str, ...] = (),
    watch=None,
):
    """Connect, resolve, run and summarise; shared by ``run`` and ``demo``."""
    from virt_debug import debuggers
    from virt_debug.backends.libvirt.summary import render_summary

    debuggers.get(debugger).require()
    if domains.looks_like_file(spec):
        # Check the file before anything touches libvirt.
        domains.read_file(Path(spec))
    conn = connection.connect(uri)
    try:
        target = domains.recover(conn, domains.resolve(conn, spec))
        options = session.RunOptions(
            debugger=debugger,
            output=output or default_output(target.name),
            duration=duration,
            full=full,
            qemu=qemu,
            extra_args=extra_args,
        )
        console = Console(stderr=True)
        progress = RichProgress(console)
        try:
            result = session.run(conn, target, options, progress=progress, watch=watch)
        finally:
            progress.close()
    finally:
        conn.close()

    # Piped or saved, lines are not cut: paths stay whole for grep and bug reports.
    out = Console()
    width = out.width if out.is_terminal else WIDE
    text = render_summary(result, color=out.is_terminal, width=width)
    (result.output / "summary.txt").write_text(
        render_summary(result, width=WIDE) + "\n", encoding="utf-8"
    )
    click.echo(text)
    return result


@click.command(
    "run",
    context_settings={"ignore_unknown_options": False},
)
@click.argument("debugger", metavar="DEBUGGER")
@click.argument("domain", metavar="DOMAIN")
@click.option(
    "-c",
    "--connect",
    "uri",
    default=connection.DEFAULT_URI,
    show_default=True,
    help="libvirt URI (virt-launcher uses qemu:///session).",
)
@click.option("--duration", help="Stop tracing after this long: 30, 45s, 5m, 1h.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for traces and summary [default: ./virt-debug-out/DOMAIN-TIME/].",
)
@click.option("--full", is_flag=True, help="Record every call (slow: ~10x start time).")
@click.option(
    "--qemu",
    metavar="PATH",
    help="The real emulator [default: the domain's <emulator>, else libvirt's].",
)
@click.option(
    "--debugger-arg",
    "extra_args",
    multiple=True,
    metavar="ARG",
    help="One more option for the debugger (repeatable).",
)
def run_command(
    debugger: str,
    domain: str,
    uri: str,
    duration: str | None,
    output: Path | None,
    full: bool,
    qemu: str | None,
    extra_args: tuple[str, ...],
) -> None:
    """Start a libvirt DOMAIN with its QEMU under DEBUGGER and explain how it went.

    DOMAIN is a defined domain's name or a domain XML file. The domain must be shut
    off: virt-debug points its <emulator> at a wrapper (through the same onDefineDomain
    hook KubeVirt would run), starts it, traces until the guest stops, --duration
    passes or you press Ctrl-C, stops it, and puts the definition back exactly as it
    was (a domain from a file is undefined again).

    \b
    Examples:
        virt-debug run strace mydomain
        virt-debug run strace mydomain --duration 2m
        virt-debug run strace ./guest.xml --output /tmp/trace --full
        virt-debug run strace mydomain --connect qemu:///system

    With qemu:///system QEMU runs as the daemon's QEMU user: --output must be
    writable by that user, and AppArmor or SELinux may refuse the wrapper.
    """
    execute(
        debugger,
        domain,
        uri=uri,
        output=output,
        duration=parse_duration(duration),
        full=full,
        qemu=qemu,
        extra_args=extra_args,
    )


COMMANDS = [run_command]
