"""Failed calls that every healthy QEMU (and most programs) makes: expected noise.

A start of QEMU fails a few dozen calls on purpose: the dynamic loader and QEMU itself
look for files along search paths, probe devices and kernel features, and poll
non-blocking fds until they would block. Reports fold these away (counted, listed on
request) so the failures that matter stand out. ``expected_reason`` says why a failed
call is expected, or None when it may matter.
"""

import re

from virt_debug.trace.model import Syscall

_STATS = frozenset(
    {
        "stat", "lstat", "stat64", "lstat64", "newfstatat", "fstatat64", "statx",
        "access", "faccessat", "faccessat2", "readlink", "readlinkat", "statfs",
        "getxattr", "lgetxattr",
    }
)  # fmt: skip
_OPENS = frozenset({"open", "openat", "openat2"})
_RESTARTS = frozenset(
    {"ERESTARTSYS", "ERESTARTNOINTR", "ERESTARTNOHAND", "ERESTART_RESTARTBLOCK"}
)
_WAITS = frozenset(
    {
        "futex", "poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait",
        "epoll_pwait2", "nanosleep", "clock_nanosleep", "rt_sigtimedwait", "wait4",
        "io_getevents", "rt_sigsuspend", "pause",
    }
)  # fmt: skip
# Search places of the loader, locales and QEMU's data files, and configuration and
# kernel files that are optional: a miss there is the search working as designed.
_SEARCH_PARTS = (
    "/glibc-hwcaps/",
    "/locale/",
    "/locale.alias",
    "/gconv/",
    "/share/qemu/",
    "/qemu-bundle",
    "/share/seabios/",
    "/share/ipxe/",
    "/lib/ipxe/",
    "/usr/share/zoneinfo",
    "/charset.alias",
)
_OPTIONAL_ROOTS = ("/etc/", "/proc/", "/sys/", "/selinux")
_LIBRARY = re.compile(r"\.so(\.|$)")

# Size probes: the caller asks with a small buffer to learn the size it needs.
_SIZE_PROBES = frozenset(
    {
        "KVM_GET_MSR_INDEX_LIST",
        "KVM_GET_MSR_FEATURE_INDEX_LIST",
        "KVM_GET_SUPPORTED_CPUID",
        "KVM_GET_EMULATED_CPUID",
        "KVM_GET_SUPPORTED_HV_CPUID",
    }
)
# Device probes QEMU makes on every start, with the errno a missing feature gives.
_PROBES = {
    ("openat", "ENOENT", "/dev/sgx_vepc"): "SGX probe",
    ("open", "ENOENT", "/dev/sgx_vepc"): "SGX probe",
}


def expected_reason(call: Syscall) -> str | None:
    """Why this failed call is expected noise, or None when it may matter."""
    errno = call.errno
    if errno is None:
        return None
    name = call.name

    if errno in _RESTARTS:
        return "interrupted and restarted"
    if errno in ("EAGAIN", "EWOULDBLOCK"):
        return "would block (non-blocking I/O)" if name != "futex" else "futex race"
    if name in _WAITS and errno in ("ETIMEDOUT", "EINTR"):
        return "wait timed out or interrupted"
    if name == "rt_sigreturn":
        return "the interrupted call's own result, returned by the signal handler"

    path = call.path
    if errno == "ENOENT" and path is not None:
        if path == "/etc/ld.so.preload" or path.endswith("/ld.so.cache"):
            return "dynamic loader configuration"
        if name in _STATS:
            return "search path miss"
        if name in _OPENS:
            if _LIBRARY.search(path):
                return "library search miss"
            if path.startswith(_OPTIONAL_ROOTS) or any(
                p in path for p in _SEARCH_PARTS
            ):
                return "optional file or search miss"
        if name in ("unlink", "unlinkat"):
            return "removing a file that was not there"
        probe = _PROBES.get((name, errno, path))
        if probe:
            return probe

    if errno == "EISDIR" and name in _OPENS:
        return "a directory probed as a file"
    if name == "ioctl":
        return _ioctl_reason(call.args, errno)
    if (
        name == "seccomp"
        and errno in ("EFAULT", "EINVAL")
        and call.args.endswith("NULL")
    ):
        return "libseccomp feature probe"
    if name == "getpeername" and errno == "ENOTCONN":
        return "listening socket has no peer"
    if name in ("readlink", "readlinkat") and errno == "EINVAL":
        return "not a symbolic link"
    return None


def _ioctl_reason(args: str, errno: str) -> str | None:
    if errno == "ENOTTY" and ("TCGETS" in args or "TIOCGWINSZ" in args):
        return "terminal check on a non-terminal"
    if errno == "E2BIG" and any(probe in args for probe in _SIZE_PROBES):
        return "KVM size probe"
    if errno == "EBADFD" and "TUNSETVNETHDRSZ" in args:
        return "tap feature probe before TUNSETIFF"
    if errno == "EINTR" and "KVM_RUN" in args:
        return "vCPU kicked out of KVM_RUN"
    if errno == "EINVAL" and "KVM_KVMCLOCK_CTRL" in args:
        return "the guest does not use kvmclock (yet)"
    return None


# Calls every thread makes all the time (signal masks, memory management, waits):
# among "the last calls before the end" they say nothing unless they failed.
_QUIET = frozenset(
    {
        "rt_sigprocmask", "rt_sigaction", "sigaltstack", "mmap", "munmap",
        "mprotect", "madvise", "brk", "futex", "set_robust_list", "rseq",
        "getpid", "gettid", "clock_gettime", "sched_yield", "membarrier",
    }
)  # fmt: skip
_CALL_TEXT = re.compile(r"^(?:\d+ )?(\w+)\(")


def is_quiet_call(text: str) -> bool:
    """Whether an evidence line (``PID name(args) = result``) is a routine call
    that succeeded: noise among the last calls of a thread."""
    m = _CALL_TEXT.match(text)
    return m is not None and m.group(1) in _QUIET and " = -1 " not in text


_STDERR_WRITE = re.compile(r"^(?:\d+ )?writev?\(2[<,]")


def is_stderr_write(text: str) -> bool:
    """Whether an evidence line is a write to fd 2 (a piece of QEMU's message)."""
    return _STDERR_WRITE.match(text) is not None
