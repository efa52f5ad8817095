"""ltrace: library calls of QEMU and its threads, with timestamps.

Much slower than strace and fragile with many threads; useful for short starts.
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger


class Ltrace(Debugger):
    def default_options(self, *, full: bool) -> list[str]:
        options = ["-f", "-tt", "-o", f"{LAUNCH_DIR}/ltrace.log"]
        if full:
            options.append("-S")
        return options

    def separator(self) -> list[str]:
        return []


LTRACE = Ltrace(
    name="ltrace",
    program="ltrace",
    summary="library calls of QEMU (slow)",
    outputs=("ltrace.log",),
)
