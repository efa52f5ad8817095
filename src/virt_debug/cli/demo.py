"""``virt-debug demo``: trace a tiny generated guest, healthy or broken."""

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from virt_debug.backends.libvirt import connection
from virt_debug.backends.libvirt.daemon import QEMU_UID, SessionDaemon
from virt_debug.backends.libvirt.summary import qemu_failed
from virt_debug.cli.run import execute, exit_for
from virt_debug.demo.bootsector import GREETING
from virt_debug.demo.guest import DEFAULT_NAME, create_guest
from virt_debug.errors import QemuFailed, UsageError

log = logging.getLogger(__name__)

# Where root's demo keeps the uid-107 session daemon's state (sockets, logs, cache);
# VIRT_DEBUG_SESSION_BASE moves it (the tests use a temporary one).
ROOT_SESSION_BASE = "/var/tmp/virt-debug-session-107"
# A daemon the demo starts exits by itself this long after its last client.
DAEMON_IDLE_EXIT = 120
GUARD_SECONDS = 120.0


def _default_output() -> Path:
    return Path("virt-debug-out") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"


def _writable_by(daemon: SessionDaemon, directory: Path) -> bool:
    probe = ["sh", "-c", 'test -w "$1" && test -x "$1"', "sh", str(directory)]
    return subprocess.run(daemon.as_user(probe), env=daemon.env()).returncode == 0


def drop_to_qemu_user(
    args: list[str],
    output: Path | None,
    what: str,
    check: Callable[[SessionDaemon], None] | None = None,
) -> tuple[SessionDaemon, Path]:
    """As root: run ``virt-debug ARGS --output OUTPUT`` as uid 107 (exec).

    The uid-107 session daemon under ROOT_SESSION_BASE is started if none answers;
    ``demo`` and ``run`` share this; ``check`` may refuse the run first, before
    anything is created. When uid 107 cannot run this tool (a checkout
    under /root), it returns instead: the daemon and the output directory to drive
    from here, as root, with the daemon's environment already in ``os.environ``.
    """
    base = Path(os.environ.get("VIRT_DEBUG_SESSION_BASE") or ROOT_SESSION_BASE)
    daemon = SessionDaemon(base, uid=QEMU_UID)
    if not daemon.reachable():
        click.echo(
            f"virt-debug: no libvirt session daemon for uid {QEMU_UID} answers; "
            f"starting one (state in {base}, it exits when idle "
            f"for {DAEMON_IDLE_EXIT} s)",
            err=True,
        )
        daemon.start(idle_exit=DAEMON_IDLE_EXIT)

    try:
        python, env = daemon.python()
    except UsageError as e:
        # A checkout under /root, say: uid 107 cannot run this tool. Drive its
        # daemon from here instead; only the guest's files need to be its.
        log.info("%s", e)
        python, env = [], {}
    if check is not None:
        check(daemon)
    output = _output_for(daemon, (output or _default_output()).absolute())

    if not python:
        click.echo(
            f"virt-debug: uid {daemon.uid} cannot run {sys.executable}; running "
            f"{what} as root against uid {daemon.uid}'s session daemon",
            err=True,
        )
        os.environ.update(daemon.env())
        return daemon, output

    click.echo(
        f"virt-debug: running {what} as uid {daemon.uid} with its own libvirt "
        f"session daemon, like virt-launcher",
        err=True,
    )
    argv = [
        *python,
        "-m",
        "virt_debug",
        *global_flags(),
        *args,
        "--output",
        str(output),
    ]
    argv = daemon.as_user(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


def global_flags() -> list[str]:
    """This command's -v and -q, for the same command run again as uid 107."""
    params = click.get_current_context().find_root().params
    return ["-v"] * (params.get("verbose") or 0) + (
        ["-q"] if params.get("quiet") else []
    )


def _output_for(daemon: SessionDaemon, output: Path) -> Path:
    """``output`` for the daemon's user: made theirs if we make it; a folder that
    exists already is only checked (its owner is the user's business, and it may be
    `.` or /etc). A fallback if that user cannot reach a folder we make."""
    if output.exists():
        if output.is_dir() and _writable_by(daemon, output):
            return output
        raise UsageError(
            f"uid {daemon.uid} (QEMU's user) cannot write {output}",
            hint="name a new directory for --output, which virt-debug makes for "
            f"uid {daemon.uid}, or one that uid can write",
        )
    try:
        output.mkdir(parents=True)
    except OSError as e:
        raise UsageError(
            f"cannot make the output directory {output}: {e.strerror}",
            hint="choose another --output",
        ) from e
    os.chown(output, daemon.uid, daemon.gid)
    if _writable_by(daemon, output):
        return output
    # A checkout under /root, say: uid 107 cannot even reach it.
    fallback = Path("/var/tmp/virt-debug-out") / output.name
    fallback.mkdir(parents=True, exist_ok=True)
    os.chown(fallback, daemon.uid, daemon.gid)
    if not _writable_by(daemon, fallback):
        raise UsageError(f"uid {daemon.uid} can write neither {output} nor {fallback}")
    click.echo(
        f"virt-debug: uid {daemon.uid} cannot write {output}; "
        f"writing to {fallback} instead",
        err=True,
    )
    output.rmdir()
    return fallback


def _remove_stale_demo(uri: str) -> None:
    """A demo guest left by a killed demo would block the next one: drop it."""
    import libvirt

    conn = connection.connect(uri)
    try:
        dom = conn.lookupByName(DEFAULT_NAME)
    except libvirt.libvirtError:
        conn.close()
        return
    try:
        description = dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None)
    except libvirt.libvirtError:
        description = ""
    if description.startswith("virt-debug demo guest") and not dom.isActive():
        log.warning("removing the demo guest a previous demo left defined")
        dom.undefine()
    conn.close()


@click.command("demo")
@click.option(
    "--broken", is_flag=True, help="Make the guest's disk unreadable to QEMU."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the guest, traces and summary "
    "[default: ./virt-debug-out/demo-TIME/].",
)
@click.option(
    "-c",
    "--connect",
    "uri",
    default=connection.DEFAULT_URI,
    show_default=True,
    help="libvirt URI.",
)
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="auto: KVM when this user can open /dev/kvm, else TCG.",
)
def demo_command(broken: bool, output: Path | None, uri: str, accel: str) -> None:
    """Trace a tiny generated guest through the same path as `virt-debug run strace`.

    The guest's disk is a boot sector this tool writes (nothing is downloaded): it
    prints one line on the serial port and powers off. Healthy, the line shows up in
    the serial log and the trace shows every QEMU thread. With --broken the disk is
    unreadable to QEMU's user and the summary names the failing open and its path.

    Run as root, the demo drops to uid 107 (virt-launcher's qemu user) and starts a
    private libvirt session daemon for it if none answers.

    \b
    Examples:
        virt-debug demo
        virt-debug demo --broken
        virt-debug demo --output /var/tmp/demo --accel tcg
    """
    if (
        os.geteuid() == 0
        and connection.is_session(uri)
        and "+" not in uri.split(":")[0]
    ):
        args = ["demo", "--accel", accel] + (["--broken"] if broken else [])
        daemon, output = drop_to_qemu_user(args, output, "the demo")
        owner = (daemon.uid, daemon.gid)
        _demo(broken, output, daemon.direct_uri, accel, owner=owner)
        return
    _demo(broken, (output or _default_output()).absolute(), uri, accel)


def _demo(
    broken: bool,
    output: Path,
    uri: str,
    accel: str,
    owner: tuple[int, int] | None = None,
) -> None:
    """Generate the guest, run it through `run strace`, show the serial line."""
    guest = create_guest(output / "guest", broken=broken, accel=accel)
    if owner is not None:
        # QEMU runs as the daemon's user: the disk and its directory must be its.
        for path in (guest.directory, guest.disk, guest.xml_path):
            os.chown(path, *owner)
    _remove_stale_demo(uri)
    click.echo(
        f"virt-debug: demo guest {guest.name} ({guest.domain_type}), "
        f"disk {guest.disk}{' (unreadable: --broken)' if broken else ''}",
        err=True,
    )
    result = execute(
        "strace",
        str(guest.xml_path),
        uri=uri,
        output=output,
        duration=GUARD_SECONDS,
        full=False,
        qemu=None,
    )

    click.echo("")
    if guest.greeted():
        line = next(x for x in guest.serial_text().splitlines() if GREETING in x)
        # The path on a line of its own: output stays within 100 columns.
        click.echo(f"the guest wrote, in {guest.serial_log}:\n  {line.strip()}")
    elif not broken:
        click.echo(f"the guest's line did not reach {guest.serial_log}")
    if not broken:
        exit_for(result)
    elif qemu_failed(result) and not guest.greeted():
        # The failure is the demo's point: it succeeded.
        click.echo("as intended, the guest never ran: its disk cannot be opened")
    else:
        raise QemuFailed(
            "the broken demo guest ran: QEMU could open a disk meant to be "
            f"unreadable to it ({guest.disk})",
            hint="is QEMU running as root? the demo expects uid 107 or another user",
        )


COMMANDS = [demo_command]
