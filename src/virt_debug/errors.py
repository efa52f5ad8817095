"""The exception families of virt-debug, one per boundary.

Library code raises these; only ``virt_debug.cli.main`` turns them into a one-line
message and an exit code. Every message should say what to do next.
"""


class VirtDebugError(Exception):
    """Base of every error virt-debug reports to the user without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(VirtDebugError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class LibvirtError(VirtDebugError):
    """libvirt refused, failed or is unreachable."""

    exit_code = 3


class KubernetesError(VirtDebugError):
    """The Kubernetes API refused, failed, or the cluster is not set up for us."""

    exit_code = 4


class TraceInputError(VirtDebugError):
    """A trace file or directory cannot be read at all."""

    exit_code = 5


class QemuFailed(VirtDebugError):
    """QEMU failed to start or died; the summary printed before says why.

    Not a fault of virt-debug: the run did its job, and the exit code lets scripts
    tell a failing guest from a healthy one.
    """

    exit_code = 6


class Interrupted(VirtDebugError):
    """The user pressed Ctrl-C; whatever we changed has been restored."""

    exit_code = 130
