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

from virt_debug.trace import calls, syntax
from virt_debug.trace.model import Event, Exit, Note, Signal, Syscall


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
        # argument text -> (its first fd, the path -y showed for it)
        self._first_args: dict[str, tuple[int | None, str | None]] = {}
        self._mmap_args: dict[str, tuple[int | None, str | None]] = {}
        self._handlers = dict(_HANDLERS)

    def feed(self, event: Event) -> Event:
        """Annotate ``event`` (a Syscall gets path/fd_path) and update the state."""
        if type(event) is Syscall:
            self.track_call(event)
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

    def track_call(self, call: Syscall) -> Thread:
        """``feed`` for a call: annotate it; returns the thread that made it."""
        thread = self.threads.get(call.pid)
        if thread is None:
            thread = self._thread(call.pid, call.time)
        self.step(call, thread)
        return thread

    def step(self, call: Syscall, thread: Thread) -> None:
        """``track_call`` for a caller that already holds the call's thread.

        The analysis keeps each thread beside its own per-thread state and finds
        both with one lookup per call; everything else a call does to the tracker
        happens here, for it and for ``track_call`` alike.
        """
        # This runs for every call of the trace: keep it to dict lookups.
        time = call.time
        if time is not None:
            if thread.first_time is None:
                thread.first_time = time
            thread.last_time = time
        thread.calls += 1
        if call.comm:
            thread.comm = call.comm
        name = call.name
        args = call.args

        # Which fd the call acts on: "-y" shows it, else look it up. The same
        # arguments come back call after call: read each text once.
        if "0" <= args[:1] <= "9" and name not in _NO_FD_FIRST:
            first = self._first_args.get(args)
            if first is None:
                first = _first_arg(args)
                if len(self._first_args) >= 4096:
                    self._first_args.clear()
                self._first_args[args] = first
            fd, shown = first
            call.fd = fd
            if shown is not None:
                call.fd_path = shown
            elif fd is not None:
                table = self._fds.get(thread.tgid)
                if table:
                    call.fd_path = table.get(fd)

        elif name in _MMAPS:
            self._mmap_fd(call, thread)

        if name in _PATH_CALLS and '"' in args:
            call.path = syntax.first_quoted(args)

        handler = self._handlers.get(name)
        if handler is not None and call.retval is not None:
            handler(self, thread, call)

    def _mmap_fd(self, call: Syscall, thread: Thread) -> None:
        """mmap's fd is its fifth argument (-1 for anonymous memory)."""
        first = self._mmap_args.get(call.args)
        if first is None:
            first = _fifth_arg(call.args)
            if len(self._mmap_args) >= 4096:
                self._mmap_args.clear()
            self._mmap_args[call.args] = first
        fd, shown = first
        if fd is None or fd < 0:
            return
        call.fd = fd
        if shown is not None:
            call.fd_path = shown
        else:
            table = self._fds.get(thread.tgid)
            if table:
                call.fd_path = table.get(fd)

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
        path = calls.result_decoration(call.result) or call.path
        if path is None:
            return
        if not path.startswith("/"):
            base = call.fd_path
            if base is None and calls.starts_at_cwd(call.args):
                base = calls.dirfd_decoration(call.args)
            if base:
                path = base.rstrip("/") + "/" + path
        self._set_fd(thread, call.retval, path, "CLOEXEC" in call.args)
        if path.endswith("/comm"):
            # Thread names written to /proc/.../comm: only now watch writes.
            self._handlers.update(_COMM_WRITES)

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
        path = call.fd_path or calls.result_decoration(call.result)
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
        path = calls.result_decoration(call.result)
        if path is None:
            if call.name == "memfd_create":
                path = f"/memfd:{call.path or ''}"
            else:
                path = calls.ANON_FDS.get(call.name, call.name)
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
            path = calls.plain(found[0]) if found else f"{kind}:[{call.line_no}]"
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
                target = calls.comm_target(fd_path, thread.tid)
                self._thread(target, None).comm = name.removesuffix("\\n")


def _first_arg(args: str) -> tuple[int | None, str | None]:
    """The fd a call's first argument names, and the path -y printed with it."""
    num = syntax.leading_int(args)
    if num is None:
        return None, None
    fd, end = num
    if args[end : end + 1] != "<":
        return fd, None
    found = syntax.fd_decoration(args, end)
    return fd, calls.plain(found[0]) if found else None


def _fifth_arg(args: str) -> tuple[int | None, str | None]:
    """mmap's fd argument and its -y path: "NULL, 4096, PROT_READ, MAP_SHARED, 3</x>,
    0" (a decoration may hold commas: the careful split only then)."""
    if "<" in args or '"' in args:
        parts = syntax.split_args(args, 6)
    else:
        parts = args.split(", ", 5)
    if len(parts) < 5:
        return None, None
    return _first_arg(parts[4].strip())


_NO_FD_FIRST = calls.NO_FD_FIRST
_MMAPS = frozenset({"mmap", "mmap2"})
_PATH_CALLS = calls.PATH_CALLS
_HANDLERS = {name: Tracker._on_open for name in calls.OPENS}
_HANDLERS.update({name: Tracker._on_dup for name in calls.DUPS})
_HANDLERS.update({name: Tracker._on_new_fd for name in calls.ANON_FDS})
_HANDLERS.update({name: Tracker._on_pair for name in calls.PAIRS})
_HANDLERS.update({name: Tracker._on_fork for name in calls.FORKS})
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
    }
)
_COMM_WRITES = {"write": Tracker._on_comm, "pwrite64": Tracker._on_comm}
