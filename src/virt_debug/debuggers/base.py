"""What every debugger knows: how to run QEMU under it and what it leaves behind.

A debugger is described, not run, here: the emulator wrapper turns the description
into shell words. Options may name the launch's output directory through
``LAUNCH_DIR``, which the wrapper replaces with the directory it made for the launch.
"""

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

from virt_debug.errors import UsageError

# Stands for the per-launch output directory inside option words.
LAUNCH_DIR = "@LAUNCH_DIR@"


@dataclass(frozen=True)
class Debugger:
    """A program that starts QEMU as its own child (or becomes it) and records it."""

    name: str
    program: str
    summary: str
    # Files it writes into the launch directory (shell patterns).
    outputs: tuple[str, ...]
    # Who gets libvirt's stop signal: "tracee" (QEMU) or "debugger" (the debugger
    # kills QEMU itself, e.g. gdbserver, whose QEMU sits stopped until gdb connects).
    signal_target: str = "tracee"
    # A flag the wrapper adds when the installed program's --help mentions it.
    kill_on_exit_flag: str | None = None
    # Text written to `note` in the launch directory (how to use the output).
    note: str | None = None
    # QEMU under it cannot install its seccomp filter: the wrapper drops `-sandbox X`.
    drops_sandbox: bool = False
    apt_package: str = field(default="")

    def options(self, *, full: bool = False, extra: Sequence[str] = ()) -> list[str]:
        """The debugger's arguments before QEMU's path; may contain ``LAUNCH_DIR``."""
        return [*self.default_options(full=full), *extra, *self.separator()]

    def default_options(self, *, full: bool) -> list[str]:
        raise NotImplementedError

    def separator(self) -> list[str]:
        return ["--"]

    def left_out(self, *, full: bool) -> str | None:
        """What the default mode does not record, for the `filter` file; None: all."""
        return None

    def describe(self, *, full: bool) -> str:
        """One line for the launch's wrapper.log: what this launch records."""
        return f"{self.name}: {self.summary}"

    def require(self) -> str:
        """Path of the installed program; UsageError naming the package if absent."""
        path = shutil.which(self.program)
        if path is None:
            package = self.apt_package or self.program
            raise UsageError(
                f"{self.program} is not installed: the {self.name} debugger cannot run",
                hint=f"install it, e.g. `apt-get install -y {package}`",
            )
        return path
