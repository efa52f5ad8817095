"""Follows threads, processes and open files through a stream of trace events.

``Tracker.feed`` sees each event once, in order, and fills in ``Syscall.path`` (the
first path the call names) and ``Syscall.fd_path`` (what the fd it acts on refers to:
from the ``-y`` decoration when strace printed one, else from the fd table built from
the opens, dups, sockets and closes seen so far). Threads share their process's fd
table; ``fork``/``vfork``/``clone`` without ``CLONE_THREAD`` copy it (``CLONE_FILES``
shares it), and a successful ``execve`` drops the close-on-exec fds.

A thread first seen before the call that created it returned (common with ``-f``:
the child's first line comes before the parent's ``clone`` result) starts on its own
and is linked to its parent, and merged into its process, when the result arrives.
"""

from dataclasses import dataclass, field

from virt_debug.trace import syntax
from virt_debug.trace.model import Event, Exit, Note, Signal, Syscall

_FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
_OPENS = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
_DUPS = frozenset({"dup", "dup2", "dup3"})
_PAIRS = frozenset({"pipe", "pipe2", "socketpair"})
_ANON = {
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
_NO_FD_FIRST = frozenset(
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


@dataclass(slots=True)
class Thread:
    """One thread (strace's pid column is a thread id) and what is known of it."""

    tid: int
    tgid: int  # the process it belongs to (its own tid for a process leader)
    parent: int | None = None  # the thread whose fork/clone created it
    is_thread: bool = False  # created with CLONE_THREAD (shares the process)
    comm: str | None = None
    first_time: float | None = None
    last_time: float | None = None
    calls: int = 0
    exit_code: int | None = None
    signal: str | None = None  # fatal signal
    core_dumped: bool = False
    superseded_by: int | None = None  # "superseded by execve in pid N"
    became: int | None = None  # a non-leader thread's execve made it the leader
    execs: list[str] = field(default_factory=list)  # programs it exec'd, in order
    linked: bool = False  # its creating call has been seen

    @property
    def ended(self) -> str | None:
        """How it ended, in strace's words, or None while it was still running."""
        if self.signal is not None:
            return f"killed by {self.signal}" + (
                " (core dumped)" if self.core_dumped else ""
            )
        if self.exit_code is not None:
            return f"exited with {self.exit_code}"
        if self.became is not None:
            return f"continued as {self.became} after execve"
        if self.superseded_by is not None:
            return f"superseded by execve in pid {self.superseded_by}"
        return None


class Tracker:
    """Feed it every event in order; it annotates calls and keeps the thread tree."""

    def __init__(self) -> None:
        self.threads: dict[int, Thread] = {}
        self.first_pid: int | None = None
        self._fds: dict[int, dict[int, str]] = {}  # tgid -> fd -> path
        self._cloexec: dict[int, set[int]] = {}  # tgid -> fds closed on execve
        self._decorations: dict[str, str] = {}  # "12<anon_inode:[eventfd]>" -> path

    def feed(self, event: Event) -> Event:
        """Annotate ``event`` (a Syscall gets path/fd_path) and update the state."""
        if type(event) is Syscall:
            self._syscall(event)
        elif isinstance(event, Exit):
            thread = self._thread(event.pid, event.time)
            thread.exit_code = event.code
            thread.signal = event.signal
            thread.core_dumped = event.core_dumped
        elif isinstance(event, Note):
            if event.kind == "superseded":
                self._thread(event.pid, event.time).superseded_by = event.other_pid
            elif event.kind == "attached":
                self._thread(event.pid, event.time)
        elif isinstance(event, Signal):
            self._thread(event.pid, event.time)
        return event

    def thread(self, tid: int) -> Thread | None:
        return self.threads.get(tid)

    def children(self, tid: int) -> list[Thread]:
        """Threads and processes created by ``tid``, in the order first seen."""
        return [t for t in self.threads.values() if t.parent == tid]

    def processes(self) -> list[Thread]:
        """Process leaders (threads that are not CLONE_THREAD children)."""
        return [t for t in self.threads.values() if t.tgid == t.tid]

    def fd_path(self, tid: int, fd: int) -> str | None:
        thread = self.threads.get(tid)
        table = self._fds.get(thread.tgid if thread else tid)
        return table.get(fd) if table else None

    def _thread(self, tid: int, time: float | None) -> Thread:
        thread = self.threads.get(tid)
        if thread is None:
            thread = self.threads[tid] = Thread(tid, tid, first_time=time)
            if self.first_pid is None:
                self.first_pid = tid
                thread.linked = True
            self._fds[tid] = {}
            self._cloexec[tid] = set()
        if time is not None:
            if thread.first_time is None:
                thread.first_time = time
            thread.last_time = time
        return thread

    def _syscall(self, call: Syscall) -> None:
        # This runs for every call of the trace: keep it to dict lookups.
        thread = self.threads.get(call.pid)
        if thread is None:
            thread = self._thread(call.pid, call.time)
        elif call.time is not None:
            if thread.first_time is None:
                thread.first_time = call.time
            thread.last_time = call.time
        thread.calls += 1
        if call.comm:
            thread.comm = call.comm
        name = call.name
        args = call.args

        # Which fd the call acts on: "-y" shows it, else look it up.
        if "0" <= args[:1] <= "9" and name not in _NO_FD_FIRST:
            first = args.partition(",")[0]
            if first.isdecimal():
                table = self._fds.get(thread.tgid)
                if table:
                    call.fd_path = table.get(int(first))
            elif first[-1:] == ">" and first in self._decorations:
                call.fd_path = self._decorations[first]
            else:
                call.fd_path = self._first_fd(thread, args, first)

        if name in _PATH_CALLS and '"' in args:
            call.path = syntax.first_quoted(args)

        handler = _HANDLERS.get(name)
        if handler is not None and call.retval is not None:
            handler(self, thread, call)

    def _first_fd(self, thread: Thread, args: str, first: str) -> str | None:
        num = syntax.leading_int(args)
        if num is None:
            return None
        fd, end = num
        if args[end : end + 1] != "<":
            table = self._fds.get(thread.tgid)
            return table.get(fd) if table else None
        found = syntax.fd_decoration(args, end)
        if found is None:
            return None
        if first[-1:] == ">" and found[1] == len(first):
            # Decorations repeat (the same fd, call after call): remember them.
            if len(self._decorations) > 4096:
                self._decorations.clear()
            self._decorations[first] = found[0]
        return found[0]

    # -- fd table --------------------------------------------------------------

    def _table(self, thread: Thread) -> dict[int, str]:
        return self._fds.setdefault(thread.tgid, {})

    def _set_fd(self, thread: Thread, fd: int, path: str, cloexec: bool) -> None:
        self._table(thread)[fd] = path
        marks = self._cloexec.setdefault(thread.tgid, set())
        if cloexec:
            marks.add(fd)
        else:
            marks.discard(fd)

    def _close_fd(self, thread: Thread, fd: int) -> None:
        self._table(thread).pop(fd, None)
        self._cloexec.get(thread.tgid, set()).discard(fd)

    def _on_open(self, thread: Thread, call: Syscall) -> None:
        if call.retval is None or call.retval < 0:
            return
        path = _result_decoration(call.result) or call.path
        if path is None:
            return
        if not path.startswith("/"):
            base = call.fd_path
            if base is None and args_start_cwd(call.args):
                base = _dirfd_decoration(call.args)
            if base:
                path = base.rstrip("/") + "/" + path
        self._set_fd(thread, call.retval, path, "CLOEXEC" in call.args)

    def _on_close(self, thread: Thread, call: Syscall) -> None:
        num = syntax.leading_int(call.args)
        if num is not None and call.retval == 0:
            self._close_fd(thread, num[0])

    def _on_close_range(self, thread: Thread, call: Syscall) -> None:
        parts = syntax.split_args(call.args, 3)
        low = syntax.leading_int(parts[0]) if parts else None
        high = syntax.leading_int(parts[1]) if len(parts) > 1 else None
        if low is None or high is None or call.retval != 0:
            return
        table = self._table(thread)
        doomed = [fd for fd in table if low[0] <= fd <= high[0]]
        marks = self._cloexec.setdefault(thread.tgid, set())
        for fd in doomed:
            if "CLOSE_RANGE_CLOEXEC" in call.args:
                marks.add(fd)
            else:
                self._close_fd(thread, fd)

    def _on_dup(self, thread: Thread, call: Syscall) -> None:
        if call.retval is None or call.retval < 0:
            return
        path = call.fd_path or _result_decoration(call.result)
        if path is None:
            num = syntax.leading_int(call.args)
            path = self._table(thread).get(num[0]) if num else None
        if path is not None:
            self._set_fd(thread, call.retval, path, "CLOEXEC" in call.args)

    def _on_fcntl(self, thread: Thread, call: Syscall) -> None:
        if call.retval is None or call.retval < 0:
            return
        num = syntax.leading_int(call.args)
        if num is None:
            return
        if "F_DUPFD" in call.args:
            path = call.fd_path or self._table(thread).get(num[0])
            if path is not None:
                self._set_fd(thread, call.retval, path, "CLOEXEC" in call.args)
        elif "F_SETFD" in call.args:
            marks = self._cloexec.setdefault(thread.tgid, set())
            if "FD_CLOEXEC" in call.args:
                marks.add(num[0])
            else:
                marks.discard(num[0])

    def _on_new_fd(self, thread: Thread, call: Syscall) -> None:
        if call.retval is None or call.retval < 0:
            return
        path = _result_decoration(call.result)
        if path is None:
            if call.name == "memfd_create":
                path = f"/memfd:{call.path or ''}"
            else:
                path = _ANON.get(call.name, call.name)
                if call.name == "socket":
                    path = f"socket:[{syntax.split_args(call.args, 1)[0]}]"
        self._set_fd(thread, call.retval, path, "CLOEXEC" in call.args)

    def _on_pair(self, thread: Thread, call: Syscall) -> None:
        if call.retval != 0:
            return
        inside = call.args.find("[")
        close = call.args.find("]", inside)
        if inside < 0:
            return
        kind = "pipe" if call.name.startswith("pipe") else "socket"
        for part in syntax.split_args(call.args[inside + 1 : max(close, inside + 1)]):
            num = syntax.leading_int(part)
            if num is None:
                continue
            fd, end = num
            found = (
                syntax.fd_decoration(part, end) if part[end : end + 1] == "<" else None
            )
            path = found[0] if found else f"{kind}:[{call.line_no}]"
            self._set_fd(thread, fd, path, "CLOEXEC" in call.args)

    def _on_connect(self, thread: Thread, call: Syscall) -> None:
        # A UNIX socket is best named by its peer's path (the QMP monitor, ...).
        num = syntax.leading_int(call.args)
        if num is None or call.path is None or "AF_UNIX" not in call.args:
            return
        table = self._table(thread)
        if num[0] in table and table[num[0]].startswith("socket"):
            table[num[0]] = f"socket:{call.path}"

    # -- threads and processes -------------------------------------------------

    def _on_fork(self, thread: Thread, call: Syscall) -> None:
        if call.retval is None or call.retval <= 0:
            return
        child = self._thread(call.retval, None)
        child.parent = thread.tid
        is_thread = "CLONE_THREAD" in call.args
        child.is_thread = is_thread
        if child.comm is None:
            child.comm = thread.comm
        if child.linked:
            return
        child.linked = True

        # The child may have run (and opened files) before this result was printed.
        own = self._fds.pop(child.tid, {})
        own_marks = self._cloexec.pop(child.tid, set())
        if is_thread:
            child.tgid = thread.tgid
            self._table(thread).update(own)
            self._cloexec.setdefault(thread.tgid, set()).update(own_marks)
        elif "CLONE_FILES" in call.args:
            child.tgid = child.tid
            self._fds[child.tid] = self._table(thread)
            self._fds[child.tid].update(own)
            self._cloexec[child.tid] = self._cloexec.setdefault(thread.tgid, set())
        else:
            table = dict(self._table(thread))
            table.update(own)
            self._fds[child.tid] = table
            marks = set(self._cloexec.get(thread.tgid, ()))
            self._cloexec[child.tid] = marks | own_marks

    def _on_exec(self, thread: Thread, call: Syscall) -> None:
        if call.retval != 0:
            return

        # An execve in a non-leader thread ends it; the program goes on under the
        # leader's tid ("superseded by execve in pid N" on the leader).
        if thread.tgid != thread.tid and thread.tgid in self.threads:
            thread.became = thread.tgid
            thread = self.threads[thread.tgid]
        if call.path:
            thread.execs.append(call.path)
            if not call.comm:
                thread.comm = call.path.rpartition("/")[2][:15]
        table = self._table(thread)
        for fd in self._cloexec.get(thread.tgid, set()):
            table.pop(fd, None)
        self._cloexec[thread.tgid] = set()

    def _on_comm(self, thread: Thread, call: Syscall) -> None:
        # prctl(PR_SET_NAME, "name") or a write to /proc/self/task/N/comm.
        if call.name == "prctl":
            if "PR_SET_NAME" in call.args and call.retval == 0:
                name = syntax.first_quoted(call.args)
                if name is not None:
                    thread.comm = name
            return
        fd_path = call.fd_path or ""
        if fd_path.endswith("/comm") and call.retval and call.retval > 0:
            name = syntax.first_quoted(call.args)
            if name is not None:
                target = _comm_target(fd_path, thread.tid)
                self._thread(target, None).comm = name.removesuffix("\\n")


def args_start_cwd(args: str) -> bool:
    return args.startswith("AT_FDCWD<") or args.startswith("-100<")


def _dirfd_decoration(args: str) -> str | None:
    start = args.find("<")
    found = syntax.decoration_at(args, start) if start >= 0 else None
    return found[0] if found else None


def _result_decoration(result: str) -> str | None:
    num = syntax.leading_int(result)
    if num is None or result[num[1] : num[1] + 1] != "<":
        return None
    close = result.rfind(">")
    if close <= num[1]:
        return None
    path = result[num[1] + 1 : close]
    return path + " (deleted)" if result.startswith("(deleted)", close + 1) else path


def _comm_target(path: str, tid: int) -> int:
    parts = path.split("/")
    if "task" in parts:
        after = parts[parts.index("task") + 1 :]
        if after and after[0].isdecimal():
            return int(after[0])
    return tid


# Calls whose first quoted argument is a path (or a UNIX socket's sun_path).
_PATH_CALLS = frozenset(
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
_HANDLERS = {name: Tracker._on_open for name in _OPENS}
_HANDLERS.update({name: Tracker._on_dup for name in _DUPS})
_HANDLERS.update({name: Tracker._on_new_fd for name in _ANON})
_HANDLERS.update({name: Tracker._on_pair for name in _PAIRS})
_HANDLERS.update({name: Tracker._on_fork for name in _FORKS})
_HANDLERS.update(
    {
        "memfd_create": Tracker._on_new_fd,
        "close": Tracker._on_close,
        "close_range": Tracker._on_close_range,
        "fcntl": Tracker._on_fcntl,
        "fcntl64": Tracker._on_fcntl,
        "connect": Tracker._on_connect,
        "execve": Tracker._on_exec,
        "execveat": Tracker._on_exec,
        "prctl": Tracker._on_comm,
        "write": Tracker._on_comm,
        "pwrite64": Tracker._on_comm,
    }
)
