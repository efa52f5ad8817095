"""``virt-debug demo``: trace a tiny generated guest, healthy or broken."""

import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import click

from virt_debug.backends.libvirt import connection
from virt_debug.backends.libvirt.daemon import QEMU_UID, SessionDaemon
from virt_debug.cli.run import execute
from virt_debug.demo.bootsector import GREETING
from virt_debug.demo.guest import DEFAULT_NAME, create_guest
from virt_debug.errors import UsageError

log = logging.getLogger(__name__)

# Where root's demo keeps the uid-107 session daemon's state (sockets, logs, cache).
ROOT_SESSION_BASE = Path("/var/tmp/virt-debug-session-107")
# A daemon the demo starts exits by itself this long after its last client.
DAEMON_IDLE_EXIT = 120
GUARD_SECONDS = 120.0


def _default_output() -> Path:
    return Path("virt-debug-out") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"


def _child_can_work(daemon: SessionDaemon, output: Path) -> str | None:
    """Why uid 107 cannot run this tool or write ``output``; None if it can."""
    check = (
        "import os, sys, virt_debug, libvirt\n"
        "sys.exit(0 if os.access(sys.argv[1], os.W_OK | os.X_OK) else 3)\n"
    )
    argv = daemon.as_user([sys.executable, "-c", check, str(output)])
    done = subprocess.run(argv, capture_output=True, text=True, env=daemon.env())
    if done.returncode == 3:
        return f"uid {daemon.uid} cannot write {output}"
    if done.returncode != 0:
        return (
            f"uid {daemon.uid} cannot run {sys.executable} with virt-debug "
            "(put the checkout where that user can read it, e.g. under /opt or /srv)"
        )
    return None


def _drop_to_qemu_user(broken: bool, output: Path | None, accel: str) -> None:
    """As root: run the demo as uid 107 against its own session daemon (exec)."""
    daemon = SessionDaemon(ROOT_SESSION_BASE, uid=QEMU_UID)
    if not daemon.reachable():
        click.echo(
            f"virt-debug: no libvirt session daemon for uid {QEMU_UID} answers; "
            f"starting one (state in {ROOT_SESSION_BASE}, it exits when idle "
            f"for {DAEMON_IDLE_EXIT} s)",
            err=True,
        )
        daemon.start(idle_exit=DAEMON_IDLE_EXIT)

    output = (output or _default_output()).absolute()
    output.mkdir(parents=True, exist_ok=True)
    os.chown(output, daemon.uid, daemon.gid)
    problem = _child_can_work(daemon, output)
    if problem is not None:
        fallback = Path("/var/tmp/virt-debug-out") / output.name
        fallback.mkdir(parents=True, exist_ok=True)
        os.chown(fallback, daemon.uid, daemon.gid)
        if _child_can_work(daemon, fallback) is not None:
            raise UsageError(f"cannot run the demo as uid {daemon.uid}: {problem}")
        click.echo(f"virt-debug: {problem}; writing to {fallback} instead", err=True)
        output.rmdir()
        output = fallback

    click.echo(
        f"virt-debug: running the demo as uid {daemon.uid}, like virt-launcher",
        err=True,
    )
    argv = [sys.executable, "-m", "virt_debug", "demo", "--output", str(output)]
    argv += ["--accel", accel] + (["--broken"] if broken else [])
    argv = daemon.as_user(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, daemon.env())


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
        _drop_to_qemu_user(broken, output, accel)
        return

    output = (output or _default_output()).absolute()
    guest = create_guest(output / "guest", broken=broken, accel=accel)
    _remove_stale_demo(uri)
    click.echo(
        f"virt-debug: demo guest {guest.name} ({guest.domain_type}), "
        f"disk {guest.disk}{' (unreadable: --broken)' if broken else ''}",
        err=True,
    )
    execute(
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
        click.echo(f"serial log ({guest.serial_log}): {line.strip()}")
    elif not broken:
        click.echo(f"the guest's line did not reach {guest.serial_log}")
    else:
        click.echo("as intended, the guest never ran: its disk cannot be opened")


COMMANDS = [demo_command]
