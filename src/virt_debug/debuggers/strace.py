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

Wall time of ``domain.create()`` against untraced (medians of 5-11 rounds; the
machine was shared with other test runs at load 5-7, so ratios moved between runs):

    --full (nothing left out)                   48-70x
    leaving out recvmsg,ppoll,poll,read         26-30x  (write kept: 970k stops)
    leaving out recvmsg,poll,read,write          1.41x, 1.51x
    leaving out recvmsg,ppoll,poll,read,write    1.16x, 1.22x, 1.41x, 1.69x

CPU time is steadier under load (bench/strace_cpu_cost.py: QEMU q35/KVM to its main
loop, 100 monitor commands, quit; untraced 0.09 s): default +0.08 s (of which the
output options ``-tt -T -yy -Y -s 256`` +0.02-0.03 s), the set that keeps ``write``
+0.70 s, the one that keeps ``ppoll`` +0.13 s, ``--full`` +1.4-1.5 s. So the default's
cost is a fixed ~0.1 s (strace itself and QEMU's ~1,600 start-up calls), not per
monitor command: 1.03x on a 3.9 s start, up to ~1.2x on this demo's 0.6-0.9 s one.

``write`` had to go: it is the single largest source of stops and seccomp cannot
filter by file descriptor. QEMU's own error messages (writes to fd 2) are therefore
not in ``strace.log``; the wrapper copies QEMU's stderr to ``stderr`` in the launch
directory instead, so nothing the analysis needs is lost. Keeping ``ppoll`` cost
1.41-1.51x; with all five out, what is left is the fixed cost.
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
