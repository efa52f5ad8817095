"""strace: every system call of every QEMU thread, cheap enough for a libvirt start.

Default mode: ``-f`` (all threads and children) with ``--seccomp-bpf`` so calls outside
the trace set never stop QEMU, and a trace set that leaves out only the hot calls of
QEMU's monitor traffic. libvirt drives QEMU's monitor synchronously while it starts the
guest and QEMU reads that socket one byte per ``recvmsg``; tracing those calls and the
polling around them is what makes a full trace ~10x slower. Every other call, failed or
not, is kept, including ``write`` (QEMU's own error messages are writes to fd 2).

TODO: measurement figures go here.
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger

# The calls the default mode leaves out (see the module docstring for why these).
HOT_CALLS: tuple[str, ...] = ("recvmsg", "ppoll", "poll", "read", "write")

COMMON_OPTIONS = ["-f", "-tt", "-T", "-yy", "-Y", "-s", "256"]


class Strace(Debugger):
    def default_options(self, *, full: bool) -> list[str]:
        options = [*COMMON_OPTIONS, "-o", f"{LAUNCH_DIR}/strace.log"]
        if not full and HOT_CALLS:
            options += ["--seccomp-bpf", "-e", "trace=!" + ",".join(HOT_CALLS)]
        return options

    def describe(self, *, full: bool) -> str:
        left_out = self.left_out(full=full)
        if left_out is None:
            return "strace: every call of every thread is recorded (--full)"
        return f"strace: every call of every thread except (never recorded): {left_out}"

    def left_out(self, *, full: bool) -> str | None:
        if full or not HOT_CALLS:
            return None
        return " ".join(HOT_CALLS)


STRACE = Strace(
    name="strace",
    program="strace",
    summary="system calls of every QEMU thread (low overhead by default)",
    outputs=("strace.log",),
    kill_on_exit_flag="--kill-on-exit",
)
