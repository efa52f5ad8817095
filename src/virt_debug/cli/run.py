"""``virt-debug run``: trace the next start of a local libvirt domain."""

import logging
import os
import time
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from virt_debug.backends.libvirt import connection, session
from virt_debug.backends.libvirt import domain as domains
from virt_debug.cli.durations import parse_duration
from virt_debug.errors import Interrupted, LibvirtError, QemuFailed

# Piped or saved summaries wrap here; a long path keeps a line of its own, whole.
WIDE = 100


def default_output(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("virt-debug-out") / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_arguments(debugger: str, spec: str) -> str:
    """The debugger is known and installed, a domain file is one; its name if so.

    Done before anything is created or touched, here and before dropping to uid 107.
    """
    from virt_debug import debuggers

    debuggers.get(debugger).require()
    if domains.looks_like_file(spec):
        name, _ = domains.read_file(Path(spec))
        return name
    return spec


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
        # -q: phases and the live status stay silent; notices (how to attach gdb)
        # are still shown, the run depends on them.
        self.quiet = (
            logging.getLogger("virt_debug").getEffectiveLevel() > logging.WARNING
        )
        self._status: Status | None = None
        self._name = ""
        self._since = time.monotonic()

    def phase(self, name: str, detail: str = "") -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self._name and name != self._name:
            self.console.print(f"  {self._name} done in {now - self._since:.1f} s")
        if name != self._name:
            self._since = now
        self._name = name
        # One sentence: "probing: defining guest through the hook".
        text = f"[bold]{name}[/bold]" + (f": {escape(detail)}" if detail else "")
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

    def notice(self, text: str) -> None:
        # Not markup: a note holds shell quoting and brackets. Not wrapped either: a
        # command in it must survive copy and paste whole.
        self.console.print(escape(text), highlight=False, soft_wrap=True)

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
    from virt_debug.backends.libvirt.summary import render_summary

    check_arguments(debugger, spec)
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

    # Piped or saved: wrapped at WIDE columns, but paths are not cut (grep, reports).
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
@click.option(
    "--as-root",
    is_flag=True,
    help="As root with the default URI: stay root (needs root's own session daemon).",
)
@click.option(
    "--duration",
    help="Trace this long once the guest runs (the start is not counted): "
    "30, 45s, 5m, 1h.",
)
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
    as_root: bool,
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

    Debuggers: strace (the summary explains the trace), gdbserver (QEMU waits for
    gdb on 127.0.0.1:1234; run prints the gdb command as soon as QEMU waits, and
    Ctrl-C still applies while libvirt's start waits; --duration counts once the
    guest runs), valgrind
    (QEMU under valgrind has no seccomp, so the wrapper drops libvirt's -sandbox
    option and notes it in the launch's wrapper.log), ltrace, perf. For these the
    summary shows how QEMU ended, what it wrote to stderr and the output files.

    With qemu:///system QEMU runs as the daemon's QEMU user: --output must be
    writable by that user, and AppArmor or SELinux may refuse the wrapper.

    As root with the default qemu:///session, run does what `virt-debug demo` does:
    it drops to uid 107 (virt-launcher's qemu user) and uses that user's private
    libvirt session daemon (state in /var/tmp/virt-debug-session-107, started if
    none answers), so DOMAIN is a name defined there or, simplest, an XML file
    uid 107 can read. It says so in one line. An explicit --connect or --as-root
    keeps it root. To reach that daemon yourself as uid 107 (virsh, say), set
    XDG_CONFIG_HOME, XDG_CACHE_HOME and XDG_RUNTIME_DIR to its config, cache and
    runtime folders.

    \b
    Exit codes:
        0    QEMU ran and the trace was collected (it ended by itself, or
             --duration or Ctrl-C ended the tracing)
        1    general error
        2    usage error (bad arguments, debugger not installed)
        3    libvirt error (cannot connect, define, start before QEMU ran, restore)
        6    QEMU failed to start or died; the summary says why
        130  interrupted before the guest started (the definition is restored)
    """
    # Bad input fails before anything starts or is created.
    seconds = parse_duration(duration) if duration is not None else None
    name = check_arguments(debugger, domain)
    source = click.get_current_context().get_parameter_source("uri")
    if (
        os.geteuid() == 0
        and not as_root
        and source is not click.core.ParameterSource.COMMANDLINE
        and connection.is_session(uri)
    ):
        uri, output = _as_qemu_user(
            debugger, domain, name, duration, output, full, qemu, extra_args
        )
        if domains.looks_like_file(domain):
            domain = str(Path(domain).absolute())
    result = execute(
        debugger,
        domain,
        uri=uri,
        output=output,
        duration=seconds,
        full=full,
        qemu=qemu,
        extra_args=extra_args,
    )
    exit_for(result)


def _as_qemu_user(debugger, domain, name, duration, output, full, qemu, extra_args):
    """Re-run this command as uid 107 (exec); or, if it cannot, the URI to use."""
    from virt_debug.cli.demo import drop_to_qemu_user

    if domains.looks_like_file(domain):
        domain = str(Path(domain).absolute())
    args = ["run", debugger, domain]
    args += ["--duration", duration] if duration else []
    args += ["--full"] if full else []
    args += ["--qemu", qemu] if qemu else []
    args += [f"--debugger-arg={a}" for a in extra_args]
    output = output or default_output(name)

    def check(daemon) -> None:
        # Refuse a domain that is not there (or runs) before the output directory
        # exists: uid 107 could not remove it from root's folder afterwards.
        conn = connection.connect(daemon.direct_uri)
        try:
            domains.resolve(conn, domain)
        finally:
            conn.close()

    daemon, output = drop_to_qemu_user(args, output, f"`run {debugger}`", check)
    return daemon.direct_uri, output


def exit_for(result) -> None:
    """The exit code of a run whose summary is printed: see `run --help`."""
    from virt_debug.backends.libvirt.summary import qemu_failed

    if result.interrupted and not result.started:
        raise Interrupted(
            f"interrupted before the guest started; the definition of "
            f"{result.domain} is restored"
        )
    if result.ended_by == "start failed" and not result.launches:
        # libvirt refused before it ran QEMU (a missing disk, say): not QEMU's fault.
        raise LibvirtError(
            f"libvirt could not start {result.domain}; the summary says why "
            f"(also in {result.output})"
        )
    if qemu_failed(result):
        raise QemuFailed(f"QEMU failed; the summary says why (also in {result.output})")


COMMANDS = [run_command]
