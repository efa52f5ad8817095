"""ltrace: library calls of QEMU and its threads, with timestamps.

Every library call is a breakpoint stop, and QEMU makes millions while it starts
(glib, QOM): tracing them all (``--full``) took 99 s to reach QEMU's main loop against
0.2 s untraced here, and 24 s for libc alone. The default follows only the libc calls
that touch the world outside QEMU and fail in telling ways (files, sockets, ioctls,
mappings, processes, the environment): 0.6 s.
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger

OUTSIDE_CALLS = (
    "open*",
    "fopen*",
    "dlopen*",
    "access",
    "faccessat",
    "getenv",
    "stat*",
    "mkdir*",
    "unlink*",
    "socket",
    "connect",
    "bind",
    "ioctl",
    "mmap*",
    "execv*",
    "fork",
    "posix_spawn*",
    "kill",
    "abort",
    "exit",
    "_exit",
)


class Ltrace(Debugger):
    def default_options(self, *, full: bool) -> list[str]:
        options = ["-f", "-tt", "-o", f"{LAUNCH_DIR}/ltrace.log"]
        if not full:
            options += ["-e", "+".join(OUTSIDE_CALLS)]
        return options

    def separator(self) -> list[str]:
        return []

    def left_out(self, *, full: bool) -> str | None:
        return None if full else "library calls other than: " + " ".join(OUTSIDE_CALLS)


LTRACE = Ltrace(
    name="ltrace",
    program="ltrace",
    summary="calls from QEMU into libc that reach outside it (files, sockets, ...)",
    outputs=("ltrace.log",),
)
