"""What each system call does with fds, paths and threads, for the tracker.

Tables of call names by effect (creates an fd, duplicates one, forks, names a path)
and small readers of the decorations strace prints around fds.
"""

import re

from virt_debug.trace import syntax

FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
OPENS = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
DUPS = frozenset({"dup", "dup2", "dup3"})
PAIRS = frozenset({"pipe", "pipe2", "socketpair"})
ANON_FDS = {
    "eventfd": "anon_inode:[eventfd]",
    "eventfd2": "anon_inode:[eventfd]",
    "epoll_create": "anon_inode:[eventpoll]",
    "epoll_create1": "anon_inode:[eventpoll]",
    "timerfd_create": "anon_inode:[timerfd]",
    "signalfd": "anon_inode:[signalfd]",
    "signalfd4": "anon_inode:[signalfd]",
    "inotify_init": "anon_inode:inotify",
    "inotify_init1": "anon_inode:inotify",
    "fanotify_init": "anon_inode:[fanotify]",
    "userfaultfd": "anon_inode:[userfaultfd]",
    "perf_event_open": "anon_inode:[perf_event]",
    "bpf": "anon_inode:bpf",
    "io_uring_setup": "anon_inode:[io_uring]",
    "pidfd_open": "anon_inode:[pidfd]",
    "fsopen": "anon_inode:[fscontext]",
    "socket": "socket",
    "accept": "socket",
    "accept4": "socket",
}
# Calls whose first argument is not an fd although it may look like one.
NO_FD_FIRST = frozenset(
    {
        "kill", "tkill", "tgkill", "wait4", "waitid", "waitpid", "exit", "exit_group",
        "brk", "prctl", "arch_prctl", "setpgid", "getpgid", "getsid", "setuid",
        "setgid", "setresuid", "setresgid", "setfsuid", "setfsgid", "sched_setaffinity",
        "sched_getaffinity", "sched_setscheduler", "sched_getscheduler",
        "sched_setparam", "sched_getparam", "sched_setattr", "sched_getattr",
        "getpriority", "setpriority", "ioprio_get", "ioprio_set", "prlimit64",
        "setrlimit", "getrlimit", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "ptrace",
        "pidfd_open", "process_vm_readv", "process_vm_writev", "rt_sigaction",
        "rt_sigprocmask", "alarm", "umask", "personality", "socket", "socketpair",
        "clone", "clone3", "set_tid_address", "futex", "madvise", "mprotect", "munmap",
        "mlock", "munlock", "mlockall", "sysinfo", "capget", "capset", "getrandom",
        "close_range", "epoll_create", "epoll_create1", "eventfd", "eventfd2", "mmap",
        "timerfd_create", "memfd_create", "getcpu", "get_mempolicy", "set_mempolicy",
        "mbind", "membarrier", "rseq", "seccomp", "sched_yield", "nanosleep",
        "clock_nanosleep", "clock_gettime", "clock_getres", "clock_settime", "ioperm",
        "iopl", "uname", "getitimer", "setitimer", "times", "sysfs", "syslog",
    }
)  # fmt: skip


# Calls whose first quoted argument is a path (or a UNIX socket's sun_path).
PATH_CALLS = frozenset(
    {
        "open", "openat", "openat2", "creat", "stat", "lstat", "stat64", "lstat64",
        "newfstatat", "fstatat64", "statx", "access", "faccessat", "faccessat2",
        "execve", "execveat", "readlink", "readlinkat", "unlink", "unlinkat", "mkdir",
        "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
        "symlink", "symlinkat", "chmod", "fchmodat", "chown", "lchown", "fchownat",
        "truncate", "chdir", "chroot", "mknod", "mknodat", "utimensat", "utime",
        "utimes", "futimesat", "mount", "umount2", "statfs", "getxattr", "lgetxattr",
        "setxattr", "lsetxattr", "listxattr", "llistxattr", "removexattr",
        "lremovexattr", "inotify_add_watch", "swapon", "swapoff", "pivot_root",
        "name_to_handle_at", "open_tree", "connect", "bind", "uselib", "acct",
        "memfd_create", "fanotify_mark", "quotactl", "mount_setattr", "fspick",
    }
)  # fmt: skip


# What -yy prints after a device's path: "/dev/kvm<char 10:232>".
_DEVICE = re.compile(r"<(?:char|block) \d+:\d+>(?=(?: \(deleted\))?$)")


def plain(path: str) -> str:
    """A decorated path without the device numbers -yy adds after it."""
    return _DEVICE.sub("", path, count=1) if path[-1:] in (">", ")") else path


def starts_at_cwd(args: str) -> bool:
    return args.startswith("AT_FDCWD<") or args.startswith("-100<")


def dirfd_decoration(args: str) -> str | None:
    start = args.find("<")
    found = syntax.decoration_at(args, start) if start >= 0 else None
    return plain(found[0]) if found else None


def result_decoration(result: str) -> str | None:
    num = syntax.leading_int(result)
    if num is None or result[num[1] : num[1] + 1] != "<":
        return None
    close = result.rfind(">")
    if close <= num[1]:
        return None
    path = plain(result[num[1] + 1 : close])
    return path + " (deleted)" if result.startswith("(deleted)", close + 1) else path


def comm_target(path: str, tid: int) -> int:
    parts = path.split("/")
    if "task" in parts:
        after = parts[parts.index("task") + 1 :]
        if after and after[0].isdecimal():
            return int(after[0])
    return tid
