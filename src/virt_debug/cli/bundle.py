"""`virt-debug bundle`: build the portable debugger bundle for distroless pods."""

import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from virt_debug.launch import bundle as tool_bundle

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


@click.command("bundle")
@click.argument("dest", type=click.Path(path_type=Path, allow_dash=True))
@click.option(
    "--debugger",
    type=click.Choice(sorted(tool_bundle.DEBUGGERS)),
    default="strace",
    show_default=True,
    help="The debugger to bundle.",
)
def bundle_command(dest: Path, debugger: str) -> None:
    """Build a debugger that runs in a container with no shell and no libc.

    The bundle holds the debugger from this machine, every library it needs and
    the dynamic loader, a static busybox as the shell, and MANIFEST, SHA256SUMS and
    VERSION files. The wrapper runs the debugger through the bundled loader, so
    nothing leaks into QEMU. `virt-debug kubevirt setup` builds and uploads it for
    you; this command is for looking at it or shipping it yourself.

    DEST is a directory, or a .tar.gz file (or - for stdout) to get the archive
    that the helper pod unpacks.

    \b
    Examples:
        virt-debug bundle ./tools
        virt-debug bundle --debugger gdbserver ./gdb-tools
        virt-debug bundle tools.tar.gz
        virt-debug bundle - | ssh node 'mkdir -p /srv/tools && tar xz -C /srv/tools'
    """
    console = Console(stderr=True)
    archive = str(dest) == "-" or str(dest).endswith(_ARCHIVE_SUFFIXES)
    if not archive:
        built = tool_bundle.build_bundle(dest, debugger)
        console.print(f"{debugger} bundle in {built} ({_summary(built)})")
        return

    # Build in a scratch directory; only the archive is kept.
    with tempfile.TemporaryDirectory(prefix="virt-debug-bundle-") as scratch:
        built = tool_bundle.build_bundle(Path(scratch) / "tools", debugger)
        if str(dest) == "-":
            _write(sys.stdout.buffer, built)
        else:
            with open(dest, "wb") as out:
                _write(out, built)
        console.print(f"{debugger} bundle archived to {dest} ({_summary(built)})")


def _write(out, built: Path) -> None:
    for chunk in tool_bundle.bundle_archive(built):
        out.write(chunk)
    out.flush()


def _summary(built: Path) -> str:
    version = tool_bundle.read_version(built)
    size = sum(p.lstat().st_size for p in built.rglob("*") if not p.is_dir())
    return f"{version['debugger-version']}, {version['machine']}, {size / 1e6:.1f} MB"


COMMANDS = [bundle_command]
