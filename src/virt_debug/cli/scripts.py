"""``wrapper-script`` and ``hook-script``: the scripts libvirt and KubeVirt run."""

import click

from virt_debug import debuggers
from virt_debug.launch import hook_script
from virt_debug.launch.hook import EMULATOR as DEFAULT_EMULATOR
from virt_debug.launch.hook import HookError, check_emulator
from virt_debug.launch.wrapper import render_wrapper


@click.command("wrapper-script")
@click.argument("debugger", type=click.Choice(debuggers.NAMES), default="strace")
@click.option(
    "--qemu",
    default="/usr/bin/qemu-system-x86_64",
    show_default=True,
    help="The real emulator the wrapper runs (/usr/libexec/qemu-kvm in virt-launcher).",
)
@click.option(
    "--output",
    default="/var/tmp/virt-debug",
    show_default=True,
    help="Directory that receives one new sub-directory per QEMU launch.",
)
@click.option("--full", is_flag=True, help="Trace every call (much slower start).")
@click.option(
    "--tool-dir",
    default=None,
    help="A portable tool bundle (bin/, lib/ with its loader); default: PATH.",
)
@click.option(
    "--shell",
    default="/bin/sh",
    show_default=True,
    help="Interpreter of the script (a bundle's static busybox: TOOL_DIR/bin/sh).",
)
@click.option(
    "--debugger-arg",
    "extra_args",
    multiple=True,
    help="One more option for the debugger, after the defaults (repeatable).",
)
def wrapper_script(
    debugger: str,
    qemu: str,
    output: str,
    full: bool,
    tool_dir: str | None,
    shell: str,
    extra_args: tuple[str, ...],
) -> None:
    """Print the emulator wrapper: a POSIX sh script to put in a domain's <emulator>.

    libvirt's capability probes run QEMU untraced; every real launch runs QEMU under
    DEBUGGER into a new directory OUTPUT/<YYYYmmdd-HHMMSS>-<pid>/ (argv, status,
    wrapper.log and the debugger's files). strace's default leaves out only a few hot
    calls of QEMU's monitor traffic, named in the launch's `filter` file.

    \b
    Examples:
        virt-debug wrapper-script strace --output /var/tmp/traces > qemu-traced
        chmod 755 qemu-traced
        virt-debug wrapper-script strace --full --qemu /usr/libexec/qemu-kvm
        virt-debug wrapper-script strace --tool-dir /var/run/virt-debug \\
            --shell /var/run/virt-debug/bin/sh --qemu /usr/libexec/qemu-kvm
    """
    click.echo(
        render_wrapper(
            debugger,
            qemu=qemu,
            output=output,
            full=full,
            tool_dir=tool_dir,
            shell=shell,
            extra_args=extra_args,
        ),
        nl=False,
    )


@click.command("hook-script")
@click.option(
    "--emulator",
    default=DEFAULT_EMULATOR,
    show_default=True,
    help="Path of the wrapper as the compute container sees it.",
)
def hook_script_command(emulator: str) -> None:
    """Print the standalone KubeVirt onDefineDomain hook (python3.9, stdlib only).

    Run as `onDefineDomain --vmi <json> --domain <xml>` it prints the domain XML with
    <devices><emulator> set to EMULATOR and every other byte unchanged.

    \b
    Examples:
        virt-debug hook-script --emulator /var/run/virt-debug/bin/qemu-wrapper \\
            > onDefineDomain
        ./onDefineDomain --vmi '{}' --domain "$(cat domain.xml)"
    """
    if not emulator.startswith("/"):
        raise click.BadParameter("must be an absolute path", param_hint="--emulator")
    try:
        check_emulator(emulator)
    except HookError as e:
        raise click.BadParameter(str(e), param_hint="--emulator") from e
    click.echo(hook_script(emulator), nl=False)


COMMANDS = [wrapper_script, hook_script_command]
