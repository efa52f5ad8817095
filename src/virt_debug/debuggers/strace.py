"""strace: every system call of every QEMU thread, cheap enough for a libvirt start.

Default mode: ``-f`` (all threads and children) with ``--seccomp-bpf``, so calls
outside the trace set never stop QEMU, and a trace set that leaves out only
``HOT_CALLS``; every other call, failed or not, is kept. ``--full`` traces everything.
The wrapper names the calls left out in the launch's ``filter`` file and
``wrapper.log``, and keeps QEMU's stderr in a ``stderr`` file (see below).

How the hot set was chosen (bench/strace_libvirt_start.py: a private session libvirtd
as uid 107 starting the demo guest, KVM, strace 6.1, QEMU 7.2, 2 cores, December
2026). A full trace of one ``domain.create()`` holds about 344,000 calls:

    write     56.5 %   eventfd notifications of the monitor I/O thread (fd 12 etc.)
    read      14.5 %   the matching eventfd reads
    poll      14.1 %   the monitor thread waiting on its socket
    recvmsg   14.0 %   QEMU reading libvirt's monitor commands one byte per call
    ppoll      0.5 %   the main loop; everything else together: 0.5 %

Median start time against untraced (the machine was shared, so ratios moved between
runs; the absolute overhead of the default mode is 0.1-0.6 s, mostly strace's fixed
cost of following QEMU's ~1,600 remaining start-up calls and threads):

    --full (nothing left out)                   48-70x
    leaving out recvmsg,ppoll,poll,read         26-30x  (write kept: 970k stops)
    leaving out recvmsg,poll,read,write          1.41x
    leaving out recvmsg,ppoll,poll,read,write    1.16x, 1.22x (quiet), 1.69x (load 7)

``write`` had to go: it is the single largest source of stops and seccomp cannot
filter by file descriptor. QEMU's own error messages (writes to fd 2) are therefore
not in ``strace.log``; the wrapper copies QEMU's stderr to ``stderr`` in the launch
directory instead, so nothing the analysis needs is lost. The set cannot shrink
further: without ``ppoll`` the start took 1.41x.
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
