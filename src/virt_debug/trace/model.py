"""What the strace reader yields: one event per logical strace record.

The reader (``trace.parse``) turns lines into these; the tracker (``trace.track``)
fills in ``path`` and thread identity; analysis, redaction and reports only ever see
these types. Times are seconds as floats: wall-clock seconds since the epoch when the
trace had absolute timestamps (``-t`` gets the trace file's date, midnight wraps
carried forward), seconds since the trace started when it had ``-r``, else None.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class Syscall:
    """A completed call; an ``<unfinished ...>`` start joined with its ``resumed`` end.

    A start never resumed (the trace ended, the thread vanished) has the result
    ``"<unfinished ...>"``; a resumed end without its start has ``resumed_only``.
    """

    source: str  # file the record came from (for -ff sets: that file)
    line_no: int  # line of the call's start (or of its resumed end if no start)
    pid: int  # thread id strace printed (0 when the trace never showed one: see parse)
    time: float | None
    name: str  # "openat", "syscall_0x1b6", ...
    args: str  # the raw argument text between the outer parentheses
    result: str  # raw text after " = ": "3</dev/kvm>", "-1 ENOENT (No such ...)", "?"
    retval: int | None  # None for "?" and unparsable results
    errno: str | None  # "ENOENT", "ERESTARTSYS", ... ; None on success
    errmsg: str | None  # "No such file or directory"
    duration: float | None = None  # -T value in seconds
    injected: str | None = None  # "INJECTED" / "DELAYED" / "INJECTED (...)" notes
    resumed_only: bool = False  # the start of the call was not in the trace
    comm: str | None = None  # thread name when -Y printed it
    path: str | None = None  # first path the call names (filled in by the tracker)
    fd_path: str | None = None  # path of the fd it acts on (filled in by the tracker)
    fd: int | None = (
        None  # the fd it acts on: its first argument, mmap's fifth (tracker)
    )
    # -k / -kk frames and -e read=/write= hex dump lines: a list once there is one,
    # a shared empty tuple until then (millions of calls have none; no list each).
    stack: list[str] | tuple[()] = ()
    dump: list[str] | tuple[()] = ()


@dataclass(slots=True)
class Signal:
    """``--- SIGCHLD {si_signo=...} ---``"""

    source: str
    line_no: int
    pid: int
    time: float | None
    signal: str
    info: str


@dataclass(slots=True)
class Exit:
    """``+++ exited with N +++`` or ``+++ killed by SIGX (core dumped) +++``."""

    source: str
    line_no: int
    pid: int
    time: float | None
    code: int | None  # exit status, None when killed
    signal: str | None  # fatal signal name when killed
    core_dumped: bool = False


@dataclass(slots=True)
class Note:
    """strace's own remarks: attached/detached, superseded by execve, personality, ...

    ``kind`` is one of "attached", "detached", "superseded", "personality", "strace".
    """

    source: str
    line_no: int
    pid: int
    time: float | None
    kind: str
    text: str
    other_pid: int | None = None  # "superseded by execve in pid N"


@dataclass(slots=True)
class Unparsed:
    """A line the reader could not make sense of; counted and shown, never dropped."""

    source: str
    line_no: int
    text: str
    reason: str


Event = Syscall | Signal | Exit | Note | Unparsed
