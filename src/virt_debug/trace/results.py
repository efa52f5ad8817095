"""The parts of an ``Analysis``: plain records that every report reads."""

from dataclasses import dataclass, field

from virt_debug.trace.evidence import Evidence


@dataclass
class FailureGroup:
    """Failed calls with the same syscall, errno and path."""

    syscall: str
    errno: str
    path: str | None
    request: str | None  # ioctl request, when the call was an ioctl
    errmsg: str | None
    count: int = 0
    first_time: float | None = None
    first_tid: int = 0
    first_thread: str | None = None
    expected: str | None = None  # why it is expected noise, None when it may matter
    examples: list[Evidence] = field(default_factory=list)


@dataclass
class Ended:
    """How QEMU (or the first process, when no QEMU ran) ended."""

    pid: int | None
    program: str | None
    how: str  # "exited", "killed", "running" (the trace ends before it does)
    code: int | None = None
    signal: str | None = None
    core_dumped: bool = False
    time: float | None = None
    tid: int | None = None  # the thread that ended it
    thread: str | None = None
    evidence: Evidence | None = None  # the "+++ ... +++" line
    last_calls: list[Evidence] = field(default_factory=list)


@dataclass
class ThreadInfo:
    tid: int
    tgid: int
    parent: int | None
    name: str | None
    is_thread: bool
    first_time: float | None
    last_time: float | None
    calls: int
    ended: str | None
    execs: list[str]


@dataclass
class SyscallStat:
    name: str
    calls: int = 0
    errors: int = 0
    seconds: float | None = None  # total -T time, None without -T


@dataclass
class FileStat:
    path: str
    ok: int = 0
    failed: int = 0


@dataclass
class Mark:
    """A point on a thread's timeline: a failure, signal, exec or exit."""

    time: float | None
    kind: str  # "failure", "signal", "exec", "exit"
    label: str
    line: int


@dataclass
class Lane:
    """One thread's timeline: its calls (first and last ones when capped), marks."""

    tid: int
    name: str | None
    calls: list[tuple[float | None, float | None, str, str | None, int]]
    marks: list[Mark]
    omitted: int = 0  # calls left out between the first and the last ones


@dataclass
class SecretRead:
    """A read of a guest secret file (libvirt's master key, a secret object's file)."""

    path: str
    time: float | None
    tid: int
    line: int
    size: int
    content: str | None  # only with redaction off
    source: str = ""  # the trace file the line is in
