"""Reading strace records one at a time: the careful half of the reader.

``RecordReader`` holds a file's reading state (the time base, the calls waiting for
their ``resumed`` end) and reads every kind of record strace prints: calls and their
halves, signals, exits, strace's own notes. ``lines.FileReader`` sends it every line
its fast path does not take.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from virt_debug.trace import syntax
from virt_debug.trace.model import Event, Exit, Note, Signal, Syscall, Unparsed

if TYPE_CHECKING:
    pass


@dataclass
class ReadStats:
    """How every line of the input was accounted for.

    ``lines == blank + records + joined + frames + unparsed`` always holds: a line is
    blank, starts an event, is joined into an event that started earlier (a
    ``resumed`` end, the rest of a line cut by ``strace: Process N attached``, a
    ``-e read=``/``-e write=`` data dump line kept in ``Syscall.dump``), is a
    ``-k`` stack frame of the call before it, or is reported as ``Unparsed``.
    """

    files: int = 0
    lines: int = 0
    blank: int = 0
    records: int = 0
    joined: int = 0
    frames: int = 0
    unparsed: int = 0

    def add(self, other: "ReadStats") -> None:
        for name in ("files", "lines", "blank", "records", "joined", "frames"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unparsed += other.unparsed


# pid column ("1234 ", "1234<comm> ") or a stderr capture's "[pid  1234] ", then the
# timestamp (time of day, epoch, -r delta with or without fraction), "[ 257] " for -n,
# "[00007f...] " for -i. Every part is optional.
# A "time" past _LATEST (any run of digits is read as one) is no time at all: it
# never becomes an infinite one. A pid has at most 10 digits (8 unless a time
# follows: "1700000000 openat(" is a time in seconds). A -Y thread name may hold
# spaces, "<" and ">" (TASK_COMM_LEN, escaped): it ends at the first ">" that a
# record follows.
_COMM = r"(?:<(.{0,64}?)>(?= +(?:\d|\[|<\.\.\.|--- |\+\+\+ |[\w?]+\(|strace: )))?"
PREFIX = re.compile(
    r"(?:\[pid +(\d{1,10})(?:<(.{0,64}?)>)?\] +|"
    r"(\d{1,8}|\d{9,10}(?= +\d))" + _COMM + r" +)?"
    r" *(\d\d:\d\d:\d\d(?:\.\d+)?|\d+\.\d+|\d{9,}|(?<= )\d+(?= ))? *"
    r"(?:\[ *\d+\] +)?(?:\[[0-9a-fA-F?]+\] +)?"
)
TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d(?:\.\d+)?|\d+\.\d+|\d{9,}")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RESUMED = re.compile(r"<\.\.\. ?([\w?]+) resumed> ?")
_EXITED = re.compile(r"\+\+\+ exited with (-?\d+) \+\+\+")
_KILLED = re.compile(r"\+\+\+ killed by (\w+)( \(core dumped\))? \+\+\+")
_SUPERSEDED = re.compile(r"\+\+\+ superseded by execve in pid (\d+) \+\+\+")
_PERSONALITY = re.compile(r"\[ Process PID=(\d+) runs in (.+) mode\. \]")
_PROCESS_NOTE = re.compile(r"strace: Process (\d+) (attached|detached)")
PROCESS_NOTE_END = re.compile(r"strace: Process \d+ (attached|detached)\s*$")
_UNFINISHED = " <unfinished ...>"
ATTACH = "strace: Process "
_HALF_DAY = 43200.0
_LATEST = 1e11  # epoch seconds of the year 5138: later "times" are not times
NO_RESULT = "call without a readable result"


class RecordReader:
    """One file's reading state and the readers of each kind of record."""

    def __init__(
        self,
        source: str,
        pid: int,
        day_base: Callable[[float], float],
        total: ReadStats | None = None,
    ):
        self.source = source
        self.default_pid = pid
        self.stats = ReadStats(files=1)
        self._total = total  # where to add this file's stats when it is done
        self._day_base = day_base
        self._base: float | None = None  # local midnight of the current day (-t/-tt)
        self._last_tod = 0.0
        self._hm = ""
        self._hm_secs = 0.0
        self._relative: bool | None = None  # -r deltas (True) or epoch seconds
        self._rel_sum = 0.0
        self._pending: dict[int, Syscall] = {}
        self._extra: list[Event] = []  # events a line produced before its own
        self._ready: list[Event] = []  # events to hand out now
        self._held: Syscall | None = None  # the last call, until no frame can follow
        self._tail: list[Event] = []  # exit lines printed after the held call
        self._carry: tuple[int, str, bool] | None = None  # (line, head, counted)

    def _count_head(self, event: Event | None, counted: bool) -> None:
        """Count a line's head read alone; a line already counted as a record (its
        attach note) whose head is unreadable counts as unparsed instead."""
        if not counted:
            self._count(event)
        elif isinstance(event, Unparsed):
            self.stats.records -= 1
            self.stats.unparsed += 1

    def _count(self, event: Event | None) -> None:
        if event is None or not isinstance(event, Unparsed):
            self.stats.records += 1
        else:
            self.stats.unparsed += 1

    def _line(self, line: str, line_no: int, prefix) -> Event | None:
        """The event of one line; None when it only opened an unfinished call."""
        m = prefix(line)
        spid, scomm, pid_s, comm, ts = m.groups()
        body = line[m.end() :]
        pid = int(pid_s or spid or self.default_pid)
        comm = comm or scomm
        time = self._time(ts) if ts is not None else None

        paren = body.find("(")
        name = body[:paren]
        if paren > 0 and (name.isidentifier() or name == "????"):
            return self._call(body, paren, name, line_no, pid, time, comm)
        if body.startswith("<..."):
            return self._resumed(body, line, line_no, pid, time, comm)
        if body.startswith("--- "):
            return self._signal(body, line, line_no, pid, time)
        if body.startswith("+++ "):
            return self._exit(body, line, line_no, pid, time)
        return self._note(body, line, line_no, pid, time)

    def _time(self, ts: str) -> float | None:
        if ts[2:3] == ":":
            hm = ts[:5]
            if hm != self._hm:
                self._hm = hm
                self._hm_secs = int(ts[:2]) * 3600.0 + int(ts[3:5]) * 60.0
            tod = self._hm_secs + float(ts[6:])
            if self._base is None:
                self._base = self._day_base(tod)
            elif tod < self._last_tod - _HALF_DAY:
                self._base += 86400.0
            self._last_tod = tod
            return self._base + tod

        value = float(ts)
        if not value < _LATEST:
            return None  # 400 digits, or a 20-digit pid column: not a real time
        if self._relative is None:
            self._relative = value < 1e8
        if self._relative:
            self._rel_sum += value
            return self._rel_sum
        return value

    def _call(self, body, paren, name, line_no, pid, time, comm) -> Event | None:
        rest = body[paren + 1 :]
        if rest.endswith(_UNFINISHED):
            call = Syscall(
                self.source, line_no, pid, time, name, rest[: -len(_UNFINISHED)],
                "", None, None, None, comm=comm,
            )  # fmt: skip
            self._start(call)
            return None

        done = _complete(rest)
        if done is None:
            return Unparsed(self.source, line_no, body, NO_RESULT)
        args, result, duration = done
        retval, errno, errmsg, injected = syntax.parse_result(result)
        return Syscall(
            self.source, line_no, pid, time, name, args, result, retval, errno,
            errmsg, duration, injected, False, comm,
        )  # fmt: skip

    def _resumed(self, body, line, line_no, pid, time, comm) -> Event:
        m = _RESUMED.match(body)
        if m is None:
            return Unparsed(self.source, line_no, line, "unreadable resumed call")
        name = m.group(1)
        done = _complete("(" + body[m.end() :], skip_paren=True)

        if done is None:
            self._give_up(pid, name)
            return Unparsed(self.source, line_no, line, "resumed call without a result")
        args, result, duration = done
        if args.startswith("<unavailable>"):
            # "<... read resumed> <unavailable>) = ?": the thread went away in the call.
            args = args[13:].lstrip()
            result += " <unavailable>"
        retval, errno, errmsg, injected = syntax.parse_result(result)
        call = self._finish(
            pid, name, args, result, retval, errno, errmsg, duration, injected, time,
            line_no, comm,
        )  # fmt: skip
        self.stats.records -= 1  # _finish counted the line; _slow counts it again
        return call

    def _start(self, call: Syscall) -> None:
        """Keep an unfinished call until its end; one left waiting is given up."""
        old = self._pending.get(call.pid)
        if old is not None:
            old.result = "<unfinished ...>"
            self._extra.append(old)
        self._pending[call.pid] = call

    def _finish(
        self, pid, name, args, result, retval, errno, errmsg, duration, injected,
        time, line_no, comm,
    ) -> Syscall:  # fmt: skip
        """The call a resumed end completes: its start joined, or on its own."""
        call = self._pending.pop(pid, None)
        if call is None and self._pending:
            call = self._adopt(pid, name)
        if call is not None and call.name != name:
            call.result = "<unfinished ...>"
            self._extra.append(call)
            call = None
        if call is None:
            self.stats.records += 1
            return Syscall(
                self.source, line_no, pid, time, name, args, result, retval, errno,
                errmsg, duration, injected, True, comm,
            )  # fmt: skip
        call.args += args
        call.result = result
        call.retval = retval
        call.errno = errno
        call.errmsg = errmsg
        call.duration = duration
        call.injected = injected
        if comm:
            call.comm = comm
        self.stats.joined += 1
        return call

    def _give_up(self, pid: int, name: str) -> None:
        """Give up the waiting start of ``name`` when its end cannot be read."""
        call = self._pending.get(pid)
        if call is not None and call.name == name:
            del self._pending[pid]
            call.result = "<unfinished ...>"
            self._extra.append(call)

    def _adopt(self, pid: int, name: str) -> Syscall | None:
        """In a stderr capture the start and end of a call can differ in prefix.

        A call begun while strace printed no pid prefix (one process traced) may end
        with one, and the other way round: join them when the pairing is unique.
        """
        if pid:
            call = self._pending.get(0)
            if call is not None and call.name == name:
                del self._pending[0]
                call.pid = pid
                return call
            return None
        same = [p for p, call in self._pending.items() if call.name == name]
        return self._pending.pop(same[0]) if len(same) == 1 else None

    def _signal(self, body, line, line_no, pid, time) -> Event:
        inner = body[4:]
        if inner.endswith(" ---"):
            inner = inner[:-4]
        sig, _, info = inner.partition(" ")
        if sig == "stopped":
            return Signal(
                self.source, line_no, pid, time, info.rpartition(" ")[2], inner
            )
        if not sig.startswith("SIG") and not sig.isdigit():
            return Unparsed(self.source, line_no, line, "unreadable signal line")
        return Signal(self.source, line_no, pid, time, sig, info)

    def _exit(self, body, line, line_no, pid, time) -> Event:
        m = _EXITED.match(body)
        if m is not None:
            event: Event = Exit(self.source, line_no, pid, time, int(m.group(1)), None)
        elif (m := _KILLED.match(body)) is not None:
            event = Exit(
                self.source, line_no, pid, time, None, m.group(1), bool(m.group(2))
            )
        elif (m := _SUPERSEDED.match(body)) is not None:
            other = int(m.group(1))
            text = body.strip("+ ")
            event = Note(self.source, line_no, pid, time, "superseded", text, other)
            # The exec'ing thread's call ends under the pid it takes over.
            moved = self._pending.pop(other, None)
            if moved is not None:
                self._flush(pid)
                self._pending[pid] = moved
            return event
        else:
            return Unparsed(self.source, line_no, line, "unreadable exit line")
        self._flush(pid)
        return event

    def _flush(self, pid: int) -> None:
        call = self._pending.pop(pid, None)
        if call is not None:
            call.result = "<unfinished ...>"
            self._extra.append(call)

    def _note(self, body, line, line_no, pid, time) -> Event:
        text = body[8:] if body.startswith("strace: ") else body
        m = _PROCESS_NOTE.match(body)
        if m is not None:
            return Note(self.source, line_no, int(m.group(1)), time, m.group(2), body)
        m = _PERSONALITY.match(text)
        if m is not None:
            return Note(
                self.source, line_no, int(m.group(1)), time, "personality", text
            )
        if body.startswith("strace: "):
            return Note(self.source, line_no, pid, time, "strace", text)
        return Unparsed(self.source, line_no, line, "not a strace record")


def _complete(
    rest: str, skip_paren: bool = False
) -> tuple[str, str, float | None] | None:
    """(args, result, -T seconds) of the text after ``name(``, or None."""
    duration = None
    if rest.endswith(">"):
        i = rest.rfind(" <")
        if i >= 0 and "0" <= rest[i + 2 : i + 3] <= "9":
            try:
                duration = float(rest[i + 2 : -1])
                rest = rest[:i]
            except ValueError:
                pass

    # Fast path: the last " = " ends the arguments unless the result itself holds
    # one (a decorated path with " = " in it); the result must then look like one.
    j = rest.rfind(" = ")
    if j > 0:
        head = rest[:j].rstrip(" ")
        result = rest[j + 3 :]
        if head.endswith(")") and result[:1] in _RESULT_START:
            args = head[1:-1] if skip_paren else head[:-1]
            if args.endswith("<unfinished ...>"):
                args = args[:-16].removesuffix(" ")
            return args, result, duration

    text = rest if skip_paren else "(" + rest
    close = syntax.matching_paren(text, 0)
    if close < 0:
        return None
    after = text[close + 1 :].lstrip(" ")
    if not after.startswith("= "):
        return None
    args = text[1:close]
    if args.endswith("<unfinished ...>"):
        args = args[:-16].removesuffix(" ")
    return args, after[2:], duration


_RESULT_START = frozenset("-0123456789?")
