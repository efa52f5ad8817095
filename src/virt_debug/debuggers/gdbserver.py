"""gdbserver: QEMU starts stopped at its first instruction, waiting for gdb.

gdbserver listens on a TCP port of the loopback address (``--once``: the port closes
when the first gdb session ends). The launch directory's ``note`` says how to connect.
libvirt's start waits for QEMU's monitor, which QEMU opens only after gdb says
``continue``; ``virt-debug run`` prints the note as soon as QEMU waits and still
honours --duration and Ctrl-C meanwhile. The port is fixed (1234): the wrapper is
written before QEMU starts, so a free port picked then could be taken by the launch.
On libvirt's stop signal the wrapper signals gdbserver itself, which kills the QEMU
it started.
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
        f"QEMU waits for gdb: gdb -ex 'target remote 127.0.0.1:{PORT}' {{qemu}}\n"
        "To let the guest run too, from this machine (or the pod):\n"
        f"  gdb -ex 'handle {QUIET_SIGNALS} nostop noprint pass' \\\n"
        f"      -ex 'target remote 127.0.0.1:{PORT}' -ex continue {{qemu}}\n"
        f"In a pod, first: kubectl port-forward pod/POD {PORT}:{PORT}\n"
        "libvirt's start of the guest waits until gdb continues QEMU."
    ),
    apt_package="gdbserver",
)
