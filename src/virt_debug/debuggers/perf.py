"""perf record: where QEMU spends CPU time, with call graphs.

``perf record -g`` samples QEMU and its threads; read the result with
``perf report -i perf.data``. As a non-root user it needs
``kernel.perf_event_paranoid`` <= 2 (Debian's default is 3 on some kernels).
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger


class Perf(Debugger):
    def default_options(self, *, full: bool) -> list[str]:
        return ["record", "-g", "-o", f"{LAUNCH_DIR}/perf.data"]


PERF = Perf(
    name="perf",
    program="perf",
    summary="CPU profile of QEMU with call graphs",
    outputs=("perf.data",),
    apt_package="linux-perf",
)
