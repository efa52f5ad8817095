"""The debuggers QEMU can run under, by name.

``get(name)`` returns a ``Debugger``: its options for QEMU, its output files and how
it is stopped. strace is the production one; the others give working wrappers.
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger
from virt_debug.debuggers.gdbserver import GDBSERVER
from virt_debug.debuggers.ltrace import LTRACE
from virt_debug.debuggers.perf import PERF
from virt_debug.debuggers.strace import STRACE
from virt_debug.debuggers.valgrind import VALGRIND
from virt_debug.errors import UsageError

__all__ = ["LAUNCH_DIR", "NAMES", "Debugger", "get"]

_BY_NAME = {d.name: d for d in (STRACE, GDBSERVER, VALGRIND, LTRACE, PERF)}

NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get(name: str) -> Debugger:
    """The debugger called ``name``; UsageError listing the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UsageError(
            f"unknown debugger {name!r}", hint=f"choose one of: {', '.join(NAMES)}"
        ) from None
