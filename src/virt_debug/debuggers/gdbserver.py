"""gdbserver: QEMU starts stopped at its first instruction, waiting for gdb.

gdbserver listens on a TCP port of the loopback address (``--once``: the port closes
when the first gdb session ends). The launch directory's ``note`` says how to connect.
libvirt waits for QEMU's monitor while the guest starts, so connect and ``continue``
before libvirt's monitor timeout (about 30 s), or the start fails. On libvirt's stop
signal the wrapper signals gdbserver itself, which kills the QEMU it started.
"""

from collections.abc import Sequence

from virt_debug.debuggers.base import Debugger

PORT = 1234
# QEMU kicks its vCPU threads with SIGUSR1 all the time; stopping on them is noise.
QUIET_SIGNALS = "SIGUSR1 SIGUSR2 SIGPIPE"


class Gdbserver(Debugger):
    def options(self, *, full: bool = False, extra: Sequence[str] = ()) -> list[str]:
        # gdbserver reads its options up to COMM; the program follows COMM directly.
        return [*extra, *self.default_options(full=full)]

    def default_options(self, *, full: bool) -> list[str]:
        return ["--once", f"127.0.0.1:{PORT}"]


GDBSERVER = Gdbserver(
    name="gdbserver",
    program="gdbserver",
    summary=f"QEMU starts stopped; attach gdb to 127.0.0.1:{PORT}",
    outputs=("note",),
    signal_target="debugger",
    note=(
        f"QEMU waits for gdb on 127.0.0.1:{PORT}. From this machine (or the pod):\n"
        f"  gdb -ex 'handle {QUIET_SIGNALS} nostop noprint pass' \\\n"
        f"      -ex 'target remote 127.0.0.1:{PORT}' -ex continue {{qemu}}\n"
        f"In a pod, first: kubectl port-forward pod/POD {PORT}:{PORT}\n"
        "Continue within libvirt's monitor timeout (about 30 s) or the start fails."
    ),
    apt_package="gdbserver",
)
