"""The per-file half of the reader: one strace output file's lines to events.

``FileReader.events`` is the hot loop of ``virt-debug analyze``: the common line, a
complete call, is read inline with ``str`` methods; every other line goes to the
careful readers of ``trace.records``; anything unreadable becomes an ``Unparsed``
event.
"""

from collections.abc import Iterable, Iterator
from typing import IO, Any

from virt_debug.trace import syntax
from virt_debug.trace.model import Event, Exit, Syscall, Unparsed
from virt_debug.trace.records import (
    ANSI,
    ATTACH,
    NO_RESULT,
    PREFIX,
    PROCESS_NOTE_END,
    TIMESTAMP,
    RecordReader,
)


class FileReader(RecordReader):
    """Reads one file; ``stats`` counts how each line was used (see ``ReadStats``)."""

    fast = True  # False sends every line the careful way (the tests compare both)

    def events(self, lines: Iterable[str], handle: IO | None = None) -> Iterator[Event]:
        """Events of ``lines``; each held back until no ``-k`` frame can follow it.

        The common line, a call or one of its halves (``PID TIME name(args) =
        result <T>``, each part but the call optional), is read inline with ``str``
        methods, and its body once per distinct text: this loop is most of the time
        ``analyze`` takes. Everything else goes to ``_slow``. ``handle``, when
        given, is closed at the end.
        """
        try:
            ready = self._ready
            source = self.source
            default_pid = self.default_pid
            fast_records = 0
            pid_text = ""
            pid = default_pid
            minute = ""  # "HH:MM:" of the last time of day, and its epoch seconds
            minute_base = 0.0
            second = ""  # "HH:MM:SS." of that minute, once a -tt time showed it whole
            line_no = 0
            fast = self.fast
            valid_time = TIMESTAMP.fullmatch
            bodies: dict[str, _Body | tuple[()]] = {}
            durations: dict[str, float] = {}  # "0.000007>" -> 7e-06
            new_object = object.__new__
            for line_no, line in enumerate(lines, 1):
                if len(line) >= LONGEST and line[-1] != "\n":
                    self._too_long(line, line_no, handle)
                    minute = second = ""
                    if ready:
                        yield from ready
                        ready.clear()
                    continue
                line = line.rstrip("\r\n")

                # Layout: an optional pid column, an optional timestamp, the body.
                # Most lines are "PID TIME BODY" with the pid of the line before,
                # split in one go; the careful split below gives the same parts.
                parts = line.split(" ", 2)
                if (
                    len(parts) == 3
                    and parts[0] == pid_text
                    and "0" <= parts[1][:1] <= "9"
                ):
                    this_pid = pid
                    _, ts, body = parts
                else:
                    head, _, rest = line.partition(" ")
                    if head == pid_text:
                        this_pid = pid
                        rest = rest.lstrip(" ")
                    elif head.isdigit() and len(head) <= 8 and head.isascii():
                        pid_text = head
                        this_pid = pid = int(head)
                        rest = rest.lstrip(" ")
                    else:
                        this_pid = default_pid
                        rest = line
                    if "0" <= rest[:1] <= "9":
                        ts, _, body = rest.partition(" ")
                    else:
                        ts = None
                        body = rest

                if not fast or self._carry is not None:
                    self._slow(line, line_no)
                    minute = second = ""  # it may have moved the day on
                    if ready:
                        yield from ready
                        ready.clear()
                    continue

                # The body without its -T duration repeats line after line in a
                # busy trace (the same write to the same eventfd): read each once.
                # The duration is the text after the last " <", "0.000007>": a few
                # thousand such texts make up a whole trace, so each is checked
                # and converted once, then looked up (a float() per line cost
                # more than the rest of the split).
                key, _, shown = body.rpartition(" <")
                duration = durations.get(shown)
                if duration is None or not key:
                    duration = None
                    if key and "0" <= shown[:1] <= "9" and shown[-1:] == ">":
                        try:
                            duration = float(shown[:-1])
                        except ValueError:
                            key = body
                        else:
                            if len(durations) >= _DURATIONS:
                                durations.clear()
                            if len(shown) <= _CACHED_DURATION:
                                durations[shown] = duration
                    else:
                        key = body
                parsed: Any = bodies.get(key)
                if parsed is None:
                    parsed = _read_body(key)
                    if len(bodies) >= _BODIES:
                        bodies.clear()
                    if len(key) <= _CACHED_BODY:
                        bodies[key] = parsed
                if not parsed:
                    self._slow(line, line_no)
                    minute = second = ""  # it may have moved the day on
                    if ready:
                        yield from ready
                        ready.clear()
                    continue
                (name, resumed, unfinished, args, result, retval, errno, errmsg,
                 injected) = parsed  # fmt: skip

                try:
                    if ts is None:
                        time = None
                    elif ts[:9] == second and ts[9:].isdecimal():
                        # Most common: the second checked on an earlier line.
                        time = minute_base + float(ts[6:])
                    elif (
                        ts[:6] == minute
                        and ts[8:9] == "."
                        and ts[6:8].isdecimal()
                        and ts[9:].isdecimal()
                    ):
                        # The common case, checked without the regex: the same
                        # minute as the line before, "SS.ffffff" (-tt).
                        second = ts[:9]
                        time = minute_base + float(ts[6:])
                    elif valid_time(ts) is None:
                        raise ValueError(ts)
                    elif ts[:6] == minute:
                        time = minute_base + float(ts[6:])
                    else:
                        time = self._time(ts)
                        if ts[2:3] == ":" and len(ts) > 6:
                            minute = ts[:6]
                            # A time of day always converts (never None).
                            minute_base = time - float(ts[6:])  # type: ignore[operator]
                            second = ""
                except ValueError:
                    self._slow(line, line_no)
                    minute = second = ""  # it may have moved the day on
                    if ready:
                        yield from ready
                        ready.clear()
                    continue

                if unfinished:
                    call = Syscall(
                        source, line_no, this_pid, time, name, args, "", None, None,
                        None,
                    )  # fmt: skip
                    self._start(call)
                    fast_records += 1
                    if self._extra:
                        self._push(None)
                        yield from ready
                        ready.clear()
                    continue
                if resumed:
                    call = self._finish(
                        this_pid, name, args, result, retval, errno, errmsg, duration,
                        injected, time, line_no, None,
                    )  # fmt: skip
                    if self._extra:
                        self._push(call)
                        yield from ready
                        ready.clear()
                        continue
                else:
                    # The common record. Syscall(...) would cost an __init__ frame
                    # for each of millions of calls (about 8% of reading a big
                    # trace): it is built in place instead, every field set (the
                    # tests read traces both ways; a field left out fails them).
                    call = new_object(Syscall)
                    call.source = source
                    call.line_no = line_no
                    call.pid = this_pid
                    call.time = time
                    call.name = name
                    call.args = args
                    call.result = result
                    call.retval = retval
                    call.errno = errno
                    call.errmsg = errmsg
                    call.duration = duration
                    call.injected = injected
                    call.resumed_only = False
                    call.comm = None
                    call.path = None
                    call.fd_path = None
                    call.fd = None
                    call.stack = ()
                    call.dump = ()
                    fast_records += 1

                held = self._held
                self._held = call
                if held is not None:
                    if self._tail:
                        self._held = held
                        self._push(call)
                        yield from ready
                        ready.clear()
                    else:
                        yield held

            self.stats.records += fast_records
            # A head cut by an attach note and never continued, then calls still waiting
            # for their end (the trace was cut short or the thread vanished).
            carry = self._carry
            if carry is not None:
                event = self._line(carry[1], carry[0], PREFIX.match)
                self._count_head(event, carry[2])
                self._push(event)
            for call in self._pending.values():
                call.result = "<unfinished ...>"
                self._push(call)
            self._pending.clear()
            self._push(None, last=True)
            yield from ready
            ready.clear()
            self.stats.lines = line_no
        finally:
            if handle is not None:
                handle.close()
        if self._total is not None:
            self._total.add(self.stats)

    def _slow(self, line: str, line_no: int) -> None:
        """Every line the inline path does not take: its events go to ``_ready``."""
        stats = self.stats
        prefix = PREFIX.match
        if line[-1:] == "\r":
            line = line.rstrip("\r")
        if "\x1b" in line:
            line = ANSI.sub("", line)
        if not line.strip(" \t\r"):
            stats.blank += 1
            return

        # -e read=/write= data dumps belong to the call printed just before them.
        if line.startswith(" | "):
            held = self._held
            if held is not None:
                if not held.dump:
                    held.dump = [line]
                elif len(held.dump) < MAX_DUMP_LINES:
                    held.dump.append(line)
                stats.joined += 1
            else:
                stats.unparsed += 1
                reason = "data dump without a call"
                self._push(Unparsed(self.source, line_no, line, reason))
            return

        # -k/-kk frames belong to the call printed just before them (and before
        # the thread's exit line, for exit_group).
        if line.startswith(" > "):
            held = self._held
            if held is not None:
                if not held.stack:
                    held.stack = [line[3:]]
                elif len(held.stack) < MAX_FRAMES:
                    held.stack.append(line[3:])
                stats.frames += 1
            else:
                stats.unparsed += 1
                reason = "stack frame without a call"
                self._push(Unparsed(self.source, line_no, line, reason))
            return

        carry = self._carry
        if carry is not None:
            start, head, counted = carry
            self._carry = None
            event = self._line(head + line, start, prefix)
            if isinstance(event, Unparsed):
                # The cut line did not continue here after all: read both alone.
                first = self._line(head, start, prefix)
                self._count_head(first, counted)
                self._push(first)
                event = self._line(line, line_no, prefix)
                self._count(event)
            else:
                if not counted:
                    stats.records += 1
                stats.joined += 1
            self._push(event)
            return

        cut = line.find(ATTACH, 1)
        if cut > 0 and PROCESS_NOTE_END.match(line, cut):
            # "clone(...strace: Process 12 attached" then the rest of the call on
            # the next line: keep the head and join it to that line.
            note = self._line(line[cut:], line_no, prefix)
            head = line[:cut]
            first = self._line(head, line_no, prefix)
            stats.records += 1
            if isinstance(first, Unparsed):
                self._carry = (line_no, head, True)
            else:
                self._push(first)
            self._push(note)
            return

        event = self._line(line, line_no, prefix)
        if type(event) is Unparsed and event.reason is NO_RESULT:
            # In a stderr capture the tracee's own output can break a call's line
            # ("write(2, "\n", 1" newline ") = 1"): try the next line as its end.
            self._carry = (line_no, line, False)
        else:
            self._count(event)
            self._push(event)

    def _too_long(self, line: str, line_no: int, handle: IO | None) -> None:
        """A line cut at ``LONGEST`` characters: the rest of it is skipped unread
        (memory stays bounded whatever the input) and the line reported."""
        if handle is not None:
            piece = line
            while piece and piece[-1] != "\n":
                piece = handle.readline(LONGEST)
        carry = self._carry
        if carry is not None:
            # The cut line before it did not continue here: read its head alone.
            self._carry = None
            first = self._line(carry[1], carry[0], PREFIX.match)
            self._count_head(first, carry[2])
            self._push(first)
        self.stats.unparsed += 1
        reason = f"line longer than {LONGEST} characters"
        self._push(Unparsed(self.source, line_no, line[:_SHOWN], reason))

    def _push(self, event: Event | None, last: bool = False) -> None:
        """Queue ``event``; the last Syscall (and exits after it) wait for frames."""
        if self._extra:
            extra = self._extra[:]
            self._extra.clear()
            for item in extra:
                self._push(item)
        if event is None and not last:
            return
        held = self._held
        if held is not None:
            if type(event) is Exit and not last:
                self._tail.append(event)
                return
            self._ready.append(held)
            if self._tail:
                self._ready.extend(self._tail)
                self._tail.clear()
            self._held = None
        if type(event) is Syscall:
            self._held = event
        elif event is not None:
            self._ready.append(event)


LONGEST = 16 << 20  # characters read of one line at most; the rest is skipped
_SHOWN = 2048  # characters of an over-long line kept to show
_BODIES = 4096  # bodies remembered at most; the memory stays bounded
_CACHED_BODY = 1024  # longer bodies are not remembered (they seldom repeat)
_DURATIONS = 4096  # -T durations remembered at most
_CACHED_DURATION = 32  # longer duration texts are not remembered
# Kept per call at most; more are counted, not kept (a call's stack or dump is shown
# whole only as far as this, and memory stays bounded however long the run of lines).
MAX_FRAMES = 256
MAX_DUMP_LINES = 4096
# name, resumed, unfinished, args, result, retval, errno, errmsg, injected
_Body = tuple[str, bool, bool, str, str, int | None, str | None, str | None, str | None]


def _read_body(body: str) -> _Body | tuple[()]:
    """The parts of a call's text without its -T duration, or () when the careful
    path must read it.

    The body is "name(args) = result", or one of its halves "name(args <unfinished
    ...>" and "<... name resumed>args) = result"; the arguments end at the last
    " = " that follows a ")" and comes before a result.
    """
    if body[:4] == "<...":
        end = body.find(" resumed>")
        name = body[4:end].lstrip(" ")
        text = body[end + 9 :]
        if text[:1] == " ":
            text = text[1:]
        resumed = True
    else:
        end = body.find("(")
        name = body[:end]
        text = body[end + 1 :]
        resumed = False
    if (
        end <= 0
        or not name.isidentifier()
        or "\x1b" in body
        or text[:13] == "<unavailable>"
    ):
        return ()

    if not resumed and text.endswith(" <unfinished ...>"):
        return name, False, True, text[:-17], "", None, None, None, None

    cut = text.rfind(" = ")
    close = cut - 1
    if cut > 0 and text[close] != ")":
        close = len(text[:cut].rstrip(" ")) - 1
    result = text[cut + 3 :]
    if cut < 0 or close < 0 or text[close] != ")" or ATTACH in result:
        return ()  # "... = 0strace: Process 9 attached" and the like
    retval: int | None
    if result.isdecimal():
        retval = int(result)
        errno = errmsg = injected = None
    else:
        retval, errno, errmsg, injected = syntax.parse_result(result)
        if retval is None and result[:1] != "?":
            return ()
    args = text[:close]
    if args[-1:] == ">" and args.endswith("<unfinished ...>"):
        args = args[:-16].removesuffix(" ")
    return name, resumed, False, args, result, retval, errno, errmsg, injected
