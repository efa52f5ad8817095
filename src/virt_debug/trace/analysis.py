"""What a trace says about QEMU, gathered in one streaming pass.

``analyze_events`` reads each event once and keeps only bounded aggregates: counts
per syscall, failed-call groups (a few examples each), the last calls of each thread,
a per-thread timeline capped at its first and last calls (plus its failures), and
QEMU's own error message. Memory stays flat on traces of any size; the caps show up
as notes in the result.

QEMU is the process that made the last successful ``execve`` of a program whose name
starts with "qemu"; without one, the first process of the trace stands in for it.
"""

import logging
import os
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from virt_debug.trace import rootcause
from virt_debug.trace.evidence import Evidence, StderrLog, evidence_of
from virt_debug.trace.model import Event, Exit, Note, Signal, Syscall, Unparsed
from virt_debug.trace.monitor import SOCKETS, MonitorLog, MonitorMessage
from virt_debug.trace.noise import expected_reason
from virt_debug.trace.redact import (
    INBOUND,
    OUTBOUND,
    STREAMS,
    WATCHED,
    Redactor,
    is_secret_path,
    payload_cut,
    stream_key,
)
from virt_debug.trace.results import (
    Ended,
    FailureGroup,
    FileStat,
    Lane,
    Mark,
    SecretRead,
    SyscallStat,
    ThreadInfo,
)
from virt_debug.trace.strings import first_literal, str_array, unescape
from virt_debug.trace.track import Thread, Tracker

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LAST_CALLS = 8
EXAMPLES = 3
MAX_GROUPS = 5000
MAX_FILES = 5000
MAX_UNPARSED = 50
MAX_UNPARSED_TEXT = 1000
_DUMP = re.compile(r"\s*\| [0-9a-f]{5} ")
# Linux paths are at most 4096 bytes, four characters each when strace escapes them:
# anything longer is not a path, and kept whole it would make the aggregates as big
# as the trace.
MAX_PATH = 16384
TIMELINE_HEAD = 1000
TIMELINE_TAIL = 1000
MAX_MARKS = 300
MAX_LANES = 256
MAX_THREADS = 4096
_OPENS = frozenset({"open", "openat", "openat2", "creat"})
_EXITS = frozenset({"exit_group", "exit"})
_READS = frozenset({"read", "pread64", "readv", "preadv", "preadv2"})
_WRITES = frozenset({"write", "writev"})
_EXECVES = frozenset({"execve", "execveat"})
_REDACTOR_CALLS = WATCHED
# What the per-call step does beyond counting, by syscall name (bit flags).
_IO, _OPEN, _EXIT, _WRITE, _EXEC = 1, 2, 4, 8, 16
_SPECIAL: dict[str, int] = {}
for _names, _flag in (
    (_REDACTOR_CALLS, _IO),
    (_OPENS, _OPEN),
    (_EXITS, _EXIT),
    (_WRITES, _WRITE),
    (_EXECVES, _EXEC),
):
    for _name in _names:
        _SPECIAL[_name] = _SPECIAL.get(_name, 0) | _flag
_TERMINALS = ("/dev/pts/", "/dev/tty", "/dev/ptmx")
MAX_READINGS = 1024
MAX_READING_ARGS = 1024  # longer argument texts are rarely repeated
MAX_SECRET_READS = 50


@dataclass
class Analysis:
    sources: list[str]
    redacted: bool
    redacted_calls: int = 0
    events: int = 0
    syscalls_total: int = 0
    start_time: float | None = None
    end_time: float | None = None
    has_durations: bool = False
    qemu_pid: int | None = None
    qemu_argv: list[str] = field(default_factory=list)
    ended: Ended | None = None
    qemu_stderr: str = ""
    # Beside a launch directory of the wrapper: its stderr file when the trace has
    # no writes to fd 2, the calls its filter left out, the status it recorded.
    launch_dir: str | None = None
    stderr_file: str | None = None
    not_traced: list[str] = field(default_factory=list)
    launch_status: str | None = None
    failures: list[FailureGroup] = field(default_factory=list)
    expected: list[FailureGroup] = field(default_factory=list)
    expected_count: int = 0
    hints: list[rootcause.Hint] = field(default_factory=list)
    threads: list[ThreadInfo] = field(default_factory=list)
    syscalls: list[SyscallStat] = field(default_factory=list)
    files: list[FileStat] = field(default_factory=list)
    timeline: list[Lane] = field(default_factory=list)
    unparsed: list[Evidence] = field(default_factory=list)
    unparsed_count: int = 0
    monitor: list[MonitorMessage] = field(default_factory=list)
    secret_reads: list[SecretRead] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def offset(self, time: float | None) -> float | None:
        """Seconds since the trace's first timed event."""
        if time is None or self.start_time is None:
            return None
        return time - self.start_time


class _LaneState:
    __slots__ = ("head", "tail", "omitted", "marks", "last", "kept")

    def __init__(self, kept: bool = True) -> None:
        self.kept = kept  # whether its calls go on the timeline (MAX_LANES)
        self.head: list = []
        self.tail: deque | None = None  # once the head is full
        self.omitted = 0
        self.marks: list[Mark] = []
        self.last: deque = deque(maxlen=LAST_CALLS)


def analyze_events(
    events: Iterable[Event], *, sources: Iterable[str] = (), redact: bool = True
) -> Analysis:
    """Analyse a stream of events (from ``parse.iter_events``) in one pass."""
    run = _Pass(redact)
    run.run(events)
    result = run.finish(list(sources))
    log.debug(
        "analysed %d events: %d failure groups, %d hints, QEMU pid %s",
        result.events, len(result.failures), len(result.hints), result.qemu_pid,
    )  # fmt: skip
    return result


class _Pass:
    def __init__(self, redact: bool) -> None:
        self.tracker = Tracker()
        self.redact = redact
        self.redactor = Redactor(self._tgid, enabled=redact)
        self.monitor = MonitorLog(redact)
        self.secret_reads: list[SecretRead] = []
        self.rules = rootcause.Collector()
        self.stderr = StderrLog()
        self.groups: dict[tuple, FailureGroup] = {}
        self.groups_dropped = 0
        self.stats: dict[str, list] = {}  # name -> [calls, errors, seconds, flags]
        self.files: dict[str, FileStat] = {}
        self.files_dropped = 0
        self.lanes: dict[int, _LaneState] = {}
        self.overflow = _LaneState(False)
        self.threads_dropped = 0
        self.unparsed: list[Evidence] = []
        self.unparsed_count = 0
        self.events = 0
        self.calls = 0
        self.start: float | None = None
        self.end: float | None = None
        self.qemu_tgid: int | None = None
        self.qemu_program: str | None = None
        self.qemu_argv: list[str] = []
        self.qemu_source: str | None = None  # the trace file of QEMU's execve
        self.exit_event: Exit | None = None
        self.exit_tid: int | None = None  # last thread of QEMU to call exit_group
        self.last_tid: int | None = None  # last thread of QEMU to make a call
        self.fatal: dict[str, int] = {}  # signal name -> thread it was delivered to
        # argument text -> what _reading found in a socket call with that text
        self.readings: dict[str, tuple] = {}

    def _tgid(self, tid: int) -> int:
        thread = self.tracker.threads.get(tid)
        return thread.tgid if thread is not None else tid

    def feed(self, event: Event) -> None:
        if type(event) is Syscall:
            self.run((event,))
            return
        self.events += 1  # events other than calls; calls count in self.calls
        if isinstance(event, Unparsed):
            self.unparsed_count += 1
            if len(self.unparsed) < MAX_UNPARSED:
                text = event.text
                if self.redact and _DUMP.match(text):
                    # strace -e read=/write= prints the bytes of a call again, as
                    # hex and text, on lines of their own: a secret's too.
                    text = text[: text.find("|") + 9] + "  <redacted>"
                if len(text) > MAX_UNPARSED_TEXT:
                    text = text[:MAX_UNPARSED_TEXT] + f"… ({len(text):,} characters)"
                text = f"{text}  [{event.reason}]"
                self.unparsed.append(Evidence(event.source, event.line_no, None, text))
            return
        self.tracker.feed(event)
        self._time(event.time)
        if isinstance(event, Exit):
            self._exit(event)
        elif isinstance(event, Signal):
            self._signal(event)
        elif isinstance(event, Note) and event.kind == "superseded":
            self._mark(event.pid, Mark(event.time, "exec", "superseded", event.line_no))

    def _time(self, time: float | None) -> None:
        if time is not None:
            if self.start is None:
                self.start = time
            self.end = time

    def run(self, events: Iterable[Event]) -> None:
        """Feed every event; the calls' step is written out here, in the loop.

        The hot path: it runs for every call of traces with millions of them, so
        the tracker's step and this pass's share one loop body, and one lookup per
        call finds both the thread (the tracker's) and its lane (ours). Most calls
        are successful and repetitive: they get counted, put on their thread's
        timeline and nothing more; one dict lookup tells the few that matter. (The
        calls are counted at the end, from the per-syscall counts.)
        """
        tracker = self.tracker
        step = tracker.step
        track = tracker.track_call
        lanes = self.lanes
        overflow = self.overflow
        stats = self.stats
        other = self.feed
        io = self._io
        # tid -> its thread and lane; a thread on the shared overflow lane is left
        # out, so that each of its calls goes through _lane as before.
        known: dict[int, tuple[Thread, _LaneState]] = {}
        for call in events:
            if type(call) is not Syscall:
                other(call)
                continue
            pid = call.pid
            found = known.get(pid)
            lane: _LaneState | None
            if found is None:
                thread = track(call)
                lane = None  # found below, where _syscall used to look it up
            else:
                thread, lane = found
                step(call, thread)

            time = call.time
            if time is not None:
                if self.start is None:
                    self.start = time
                self.end = time
            name = call.name
            tgid = thread.tgid
            # Per syscall name: [calls, errors, -T seconds, what else it needs]
            stat = stats.get(name)
            if stat is None:
                stat = stats[name] = [0, 0, 0.0, _SPECIAL.get(name)]
            stat[0] += 1
            duration = call.duration
            if duration is not None:
                stat[2] += duration
            special = stat[3]

            if special is not None and special & _IO:
                fd_path = call.fd_path
                # eventfds and the like are most of a busy QEMU's reads and writes
                if fd_path is None or fd_path[:11] != "anon_inode:":
                    io(call, tgid)

            if lane is None:
                # A thread's first call (after _io: a secret read marks only a
                # lane that already exists).
                lane = lanes.get(pid)
                if lane is None:
                    lane = self._lane(pid, tgid)
                if lane is not overflow:
                    known[pid] = (thread, lane)
            lane.last.append(call)
            errno = call.errno
            tail = lane.tail
            if tail is not None:
                # How many calls fell between head and tail is counted at the end.
                tail.append((time, duration, name, errno, call.line_no))
            elif lane.kept:
                lane.head.append((time, duration, name, errno, call.line_no))
                if len(lane.head) == TIMELINE_HEAD:
                    lane.tail = deque(maxlen=TIMELINE_TAIL)

            if errno is not None:
                stat[1] += 1
                self._failure(call, lane)
            if tgid == self.qemu_tgid:
                if call.retval is not None:  # not a call cut short by the end
                    self.last_tid = pid
                if special is not None:
                    if special & _EXIT:
                        self.exit_tid = pid
                    elif special & _WRITE and call.fd == 2:
                        self.stderr.add(call)
            if special is not None:
                if special & _OPEN and call.path is not None:
                    self._file(call.path, errno is None)
                elif special & _EXEC and call.retval == 0:
                    self._exec(call, lane)

    def _io(self, call: Syscall, tgid: int) -> None:
        """Secret files, redaction and the monitor log, for the calls that move data."""
        fd_path = call.fd_path
        redactor = self.redactor
        # A monitor socket: QEMU reads QMP one byte per recvmsg, ~100k calls on a
        # busy trace, each with the same few argument texts. What the text says
        # (its bytes, fd, stream) is read once (see _reading); only the streams'
        # state moves. A reading is only ever made for a socket: a file's call
        # never finds one.
        reading = self.readings.get(call.args)
        if (
            reading is None
            or reading[0] != call.name
            or reading[1] != fd_path
            or reading[2] != tgid
        ):
            if fd_path:
                if (
                    fd_path[0] == "/" and not fd_path.startswith(_TERMINALS)
                ) or not fd_path.startswith(STREAMS):
                    # A file (relative when the tracker could not resolve it): only
                    # a secret one matters. The read is recorded before the
                    # redactor rewrites the call.
                    if is_secret_path(fd_path, redactor.secret_files):
                        if call.name in _READS and call.retval:
                            self._secret_read(call)
                        redactor.feed(call)
                    return  # any other file, an eventfd...: no monitor there
            reading = self._reading(call, tgid)
        if reading is not None:
            inbound, data, cut, fd, key = reading[3:]
            retval = call.retval
            # Redactor.feed and MonitorLog.feed, after their checks and reading.
            hidden = (
                data
                and redactor.enabled
                and (not inbound or (retval and retval > 0))
                and redactor.feed_stream(call, tgid, fd, key, data)
            )
            if hidden:
                # The call's text is rewritten: the monitor reads it the usual way
                self.monitor.feed(call, tgid, data)
            elif data and retval is not None and retval > 0:
                self.monitor.add(call, fd, key, inbound, data, cut)
            return
        redactor.last_payload = None
        redactor.feed(call, tgid)
        # The monitor log gets the bytes the redactor decoded before hiding them.
        done = redactor.last_payload
        self.monitor.feed(call, tgid, done[1] if done and done[0] is call else None)

    def _reading(self, call: Syscall, tgid: int) -> tuple | None:
        """For a call that moved data on a socket (a monitor's): its name, fd path
        and process (what the rest depends on), whether it is inbound, its bytes,
        whether strace cut them, its fd and its stream key. None for other calls."""
        name = call.name
        fd_path = call.fd_path
        inbound = name in INBOUND
        if not inbound and name not in OUTBOUND:
            return None
        if fd_path is None or not fd_path.startswith(SOCKETS):
            return None
        args = call.args
        fd = call.fd  # the tracker's reading of the first argument
        if fd is None:
            return None  # no fd the tracker could read: the usual way
        data, cut = payload_cut(name, args)
        key = stream_key(fd_path, tgid, fd, inbound)
        reading = (name, fd_path, tgid, inbound, data, cut, fd, key)
        if len(args) <= MAX_READING_ARGS:
            if len(self.readings) >= MAX_READINGS:
                self.readings.clear()
            self.readings[args] = reading
        return reading

    def _failure(self, call: Syscall, lane: _LaneState) -> None:
        # The tracker gives mmap's fd (its fifth argument) a path too.
        path = call.path or call.fd_path
        if path is not None and len(path) > MAX_PATH:
            path = _cut_path(path)
        request = rootcause.ioctl_request(call) if call.name == "ioctl" else None
        key = (call.name, call.errno, path, request)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                self.groups_dropped += 1
                return
            thread = self.tracker.threads.get(call.pid)
            # A path QEMU's command line names is never noise, even a search miss.
            named = self.rules.names_image(path)
            group = self.groups[key] = FailureGroup(
                call.name, call.errno or "", path, request, call.errmsg,
                first_time=call.time, first_tid=call.pid,
                first_thread=thread.comm if thread else call.comm,
                expected=None if named else expected_reason(call),
            )  # fmt: skip
        group.count += 1
        if len(group.examples) < EXAMPLES:
            group.examples.append(evidence_of(call))
        self.rules.failure(call, self._tgid(call.pid), path, request, group.expected)
        if group.expected is None and len(lane.marks) < MAX_MARKS:
            label = f"{call.name} {call.errno}" + (f" {path}" if path else "")
            lane.marks.append(Mark(call.time, "failure", label, call.line_no))

    def _secret_read(self, call: Syscall) -> None:
        if len(self.secret_reads) >= MAX_SECRET_READS:
            return
        content = None
        if not self.redact:
            found = first_literal(call.args[call.args.find(",") :])
            content = unescape(found[0]).decode("utf-8", "replace") if found else ""
        self.secret_reads.append(
            SecretRead(
                call.fd_path or "", call.time, call.pid, call.line_no,
                call.retval or 0, content, call.source,
            )
        )  # fmt: skip
        lane = self.lanes.get(call.pid)
        if lane is not None and len(lane.marks) < MAX_MARKS:
            label = f"secret file read: {call.fd_path}"
            label += f": {content}" if content is not None else ""
            lane.marks.append(Mark(call.time, "secret", label, call.line_no))

    def _file(self, path: str, ok: bool) -> None:
        if len(path) > MAX_PATH:
            path = _cut_path(path)
        stat = self.files.get(path)
        if stat is None:
            if len(self.files) >= MAX_FILES:
                self.files_dropped += 1
                return
            stat = self.files[path] = FileStat(path)
        if ok:
            stat.ok += 1
        else:
            stat.failed += 1

    def _exec(self, call: Syscall, lane: _LaneState) -> None:
        program = call.path or ""
        lane.marks.append(Mark(call.time, "exec", program, call.line_no))
        if os.path.basename(program).startswith("qemu"):
            # A new QEMU: what was known of an earlier one (a probe) no longer counts.
            self.qemu_tgid = self._tgid(call.pid)
            self.qemu_program = program
            self.qemu_source = call.source
            self.qemu_argv = str_array(call.args)
            self.rules.argv(self.qemu_argv)
            self.stderr = StderrLog()
            self.exit_event = None
            self.exit_tid = None
            self.fatal = {}

    def _exit(self, event: Exit) -> None:
        label = f"killed by {event.signal}" if event.signal else f"exit {event.code}"
        self._mark(event.pid, Mark(event.time, "exit", label, event.line_no))
        target = self.qemu_tgid
        if target is None:
            target = self.tracker.first_pid
        if event.pid == target:
            self.exit_event = event

    def _signal(self, event: Signal) -> None:
        self._mark(event.pid, Mark(event.time, "signal", event.signal, event.line_no))
        if self._tgid(event.pid) == self.qemu_tgid:
            self.fatal[event.signal] = event.pid
        self.rules.signal(event, self._tgid(event.pid))

    def _mark(self, tid: int, mark: Mark) -> None:
        lane = self.lanes.get(tid)
        if lane is None:
            lane = self._lane(tid, self._tgid(tid))
        if len(lane.marks) < MAX_MARKS:
            lane.marks.append(mark)

    def _lane(self, tid: int, tgid: int) -> _LaneState:
        """A new thread's lane; past MAX_THREADS (a trace of a busy host with many
        short-lived processes), threads outside QEMU share one that is not kept."""
        count = len(self.lanes)
        if count >= MAX_THREADS and tgid != self.qemu_tgid:
            self.threads_dropped += 1
            self.overflow.marks.clear()
            return self.overflow
        lane = self.lanes[tid] = _LaneState(count < MAX_LANES)
        return lane

    def finish(self, sources: list[str]) -> Analysis:
        from virt_debug.trace.finish import finish

        self.calls = sum(stat[0] for stat in self.stats.values())
        # Each kept lane got every call of its thread: the head, then the tail.
        threads = self.tracker.threads
        for tid, lane in self.lanes.items():
            thread = threads.get(tid)
            if lane.tail is not None and thread is not None:
                lane.omitted = thread.calls - len(lane.head) - len(lane.tail)
        return finish(self, sources)


def _cut_path(path: str) -> str:
    return f"{path[:MAX_PATH]}… ({len(path):,} characters)"
