"""valgrind memcheck: QEMU's memory errors, one log per process.

QEMU runs inside valgrind (same pid), so libvirt's stop signal reaches it directly.
Only QEMU itself is checked (``--trace-children=no``: helpers it spawns run natively).
Expect a start many times slower than native; use TCG (``accel=tcg``) because
valgrind does not model KVM's ioctls precisely and reports noise around them.

QEMU under valgrind has no seccomp support, so it refuses the ``-sandbox on,...``
option libvirt always passes ("There is no option group 'sandbox'") and the guest
never starts. The wrapper therefore drops ``-sandbox`` and its value for valgrind
only, and says so in the launch's ``wrapper.log``: the guest then runs without QEMU's
syscall filter, which only a debugging run should do.
"""

from virt_debug.debuggers.base import LAUNCH_DIR, Debugger


class Valgrind(Debugger):
    def default_options(self, *, full: bool) -> list[str]:
        options = [
            "--tool=memcheck",
            f"--log-file={LAUNCH_DIR}/valgrind.%p.log",
            "--trace-children=no",
            "--error-limit=no",
            "--num-callers=30",
        ]
        if full:
            options += ["--leak-check=full", "--track-origins=yes"]
        return options

    def separator(self) -> list[str]:
        return []


VALGRIND = Valgrind(
    name="valgrind",
    program="valgrind",
    summary="memcheck of QEMU's memory use (very slow)",
    outputs=("valgrind.*.log",),
    drops_sandbox=True,
)
