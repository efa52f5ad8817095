"""The ``virt-debug`` command: the one place errors become messages and exit codes."""

import logging
import sys

import click

from virt_debug import __version__
from virt_debug.errors import VirtDebugError

log = logging.getLogger("virt_debug")


def _configure_logging(verbose: int, quiet: bool) -> None:
    # Only the CLI installs handlers; library modules just log.
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    # Logs go to stderr: stdout carries the summary, JSON or YAML a user may pipe.
    handler = RichHandler(
        console=Console(stderr=True), show_time=False, show_path=False, markup=False
    )
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="virt-debug")
@click.option(
    "-v", "--verbose", count=True, help="More detail: -v for steps, -vv for debug."
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Run QEMU under a debugger where libvirt or KubeVirt starts it, and explain
    why it failed.

    \b
    Trace a local libvirt domain's next start and read the summary:
        virt-debug run strace mydomain
    Explain a trace you already have:
        virt-debug analyze ./virt-debug-out/mydomain-20261203-101500/
    Trace a KubeVirt VM's next start in its virt-launcher pod:
        virt-debug kubevirt run strace myvm -n myns
    """
    _configure_logging(verbose, quiet)


def _register() -> None:
    # Each concern owns its command module; they are all registered here, in one place.
    from virt_debug.cli import analyze, bundle, demo, kubevirt, run, scripts

    for module in (run, analyze, scripts, kubevirt, bundle, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


def main(argv: list[str] | None = None, prog_name: str = "virt-debug") -> None:
    try:
        _register()
    except KeyboardInterrupt:
        # Ctrl-C while the command modules still load: no traceback either.
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(130)
    _run(cli, argv, prog_name)


def kubectl_plugin() -> None:
    """Entry point for ``kubectl virt-debug``: the kubevirt commands at top level."""
    from virt_debug.cli.kubevirt import kubevirt

    plugin = click.Group(
        "kubectl virt-debug",
        commands=kubevirt.commands,
        params=cli.params,
        callback=cli.callback,
        help=kubevirt.help,
        context_settings=cli.context_settings,
    )
    _run(plugin, sys.argv[1:], "kubectl virt-debug")


def printable(text: str) -> str:
    # Messages quote names from the user's input (file names, VM names): a control
    # character or stray escape sequence in them must not drive the terminal.
    return "".join(
        ch
        if ch.isprintable()
        else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )


def _run(group: click.Group, argv: list[str] | None, prog_name: str) -> None:
    try:
        group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except VirtDebugError as exc:
        click.echo(f"{prog_name}: error: {printable(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        sys.exit(0)
