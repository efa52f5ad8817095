"""Streaming reader of strace output: lines in, ``model`` events out.

Memory stays constant whatever the trace size: files are read line by line (a line
past ``lines.LONGEST`` characters is cut, skipped and reported), ``-ff`` sets are
merged by time with ``heapq.merge`` over one generator per file (a set larger than
the open-file limit allows is merged in passes through temporary files), and the
state kept is one pending ``<unfinished ...>`` call per thread (plus, for a stderr
capture whose first lines carry no pid, at most 20,000 events until the pid is known).

Which files are traces: a file named explicitly always is. In a directory (walked
recursively) a file is a trace when its name matches ``strace.log*``, ``*.strace``,
or ``<prefix>.<pid>`` (an ``-ff`` set, ``trace.1234`` included) and it is text (a
``core.1234`` dump is not); ``argv``, ``status``, ``wrapper.log`` and the like are
skipped. Files of one ``<prefix>.<pid>`` set (and ``strace.log`` with its
``strace.log.<pid>`` siblings) are merged in time order; other traces follow one
another. A ``.gz`` file is read through gzip.

Times (``Syscall.time`` and friends) are floats comparable across the files of a set:

* ``-ttt`` and ``--timestamps=unix``: epoch seconds as printed.
* ``-t``/``-tt`` (time of day, no date): the date is the local date of the file's
  modification time (the end of the trace), or the day before when the first time
  of day is later than the mtime's (the trace began before midnight). A time of day
  that jumps back by more than 12 hours is a midnight wrap: the day is carried forward.
  The result is epoch seconds in the reading machine's time zone (counted from
  local midnight, so a daylight-saving switch during that day shifts later times).
  In a ``-ff`` set that also holds ``-ttt`` files, the day is the one of their
  epoch times instead, so that all the set's times share one base.
* a "time" of 1e11 seconds or more (a run of digits that is no real time): ``None``.
* ``-r``: seconds since the first record of the file (the deltas summed).
* no timestamps: ``None``.

Lines the reader cannot read become ``Unparsed`` events with their line number and a
reason; no line is dropped (see ``ReadStats`` for the accounting). A member of a set
that vanished (or is a dangling link) is skipped with a warning and shown as an
``Unparsed`` event with line number 0; a folder that cannot be listed is logged, and
is the error when nothing else is found.
"""

import errno
import functools
import gzip
import heapq
import itertools
import logging
import operator
import os
import pickle
import re
import resource
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from virt_debug.errors import TraceInputError
from virt_debug.trace.lines import LONGEST, FileReader
from virt_debug.trace.model import Event, Exit, Note, Syscall, Unparsed
from virt_debug.trace.records import PREFIX, ReadStats

log = logging.getLogger(__name__)

_SET_MEMBER = re.compile(r"^(.+)\.(\d+)$")
_TRACE_NAME = re.compile(r"^(strace\.log.*|.*\.strace|.+\.\d+)$")
_FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
_HOLD = 20000
_NOT_TRACES = {"argv", "status", "wrapper.log", "probes.log"}
_FAN_IN = 200  # files of a -ff set open at once at most (ulimit -n is often 1024)


def trace_files(paths: Sequence[Path | str]) -> list[list[Path]]:
    """The trace files named by ``paths``, grouped: each group is merged by time."""
    groups: dict[tuple[Path, str], list[Path]] = {}
    order: list[tuple[Path, str]] = []

    def add(path: Path) -> None:
        key = (path.parent, _set_name(path.name))
        if key not in groups:
            groups[key] = []
            order.append(key)
        if path not in groups[key]:
            groups[key].append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            denied: list[str] = []
            found = [
                p
                for p in _walk(path, denied)
                if is_trace_name(p.name) and not _special(p) and _is_text(p)
            ]
            if not found and denied:
                raise TraceInputError(
                    f"{denied[0]}: permission denied (no strace output found in "
                    f"{path})",
                    "run as a user that can read the trace",
                )
            if not found:
                raise TraceInputError(
                    f"no strace output found in {path}",
                    "pass the trace file itself, or a directory holding strace.log, "
                    "*.strace or NAME.PID files",
                )
            for p in found:
                add(p)
        elif path.is_block_device() or path.is_char_device():
            # /dev/zero and the like never end; a FIFO given by name may be a
            # pipe from another program (<(zcat ...)) and is read.
            raise TraceInputError(
                f"{path} is a device, not a trace", "pass a strace output file"
            )
        elif path.exists():
            add(path)
        else:
            raise TraceInputError(
                f"{path}: no such file or directory", "check the path of the trace"
            )
    return [sorted(groups[key], key=_member_order) for key in order]


def is_trace_name(name: str) -> bool:
    """Whether a file found in a directory is taken as strace output."""
    if name in _NOT_TRACES or name.startswith("."):
        return False
    return _TRACE_NAME.match(name) is not None


def iter_events(
    paths: Sequence[Path | str], *, stats: ReadStats | None = None
) -> Iterator[Event]:
    """Every event of the traces at ``paths`` (files or directories), streamed.

    Missing inputs raise ``TraceInputError`` at once. The iterator is built from
    C-level pieces (``chain``, ``map``) around one generator per file: each event
    passes through as few Python frames as possible.
    """
    groups = trace_files(paths)
    return itertools.chain.from_iterable(_group_events(g, stats) for g in groups)


def _group_events(group: list[Path], stats: ReadStats | None) -> Iterator[Event]:
    if len(group) == 1:
        return _file_events(group[0], stats)

    # A -ff set: one generator per file, merged on time; events without a time
    # keep their place after the last timed event of their file.
    day_base = _set_day_base(group)
    fan_in = _fan_in()
    if len(group) <= fan_in:
        streams = [
            _keyed(_file_events(path, stats, day_base, True), n)
            for n, path in enumerate(group)
        ]
        return map(operator.itemgetter(3), heapq.merge(*streams))

    # More files than may be open at once (ulimit -n): merge them fan_in at a
    # time into temporary files, then merge those. The keys are unique, so the
    # order is the one a single merge would give.
    streams = [_keyed(_lazy(path, stats, day_base), n) for n, path in enumerate(group)]
    while len(streams) > fan_in:
        streams = [
            _spill(heapq.merge(*streams[i : i + fan_in]))
            for i in range(0, len(streams), fan_in)
        ]
    return map(operator.itemgetter(3), heapq.merge(*streams))


def _fan_in() -> int:
    """Files of a set to open at once: _FAN_IN, or less under a low ``ulimit -n``
    (half of it, leaving room for the rest of the program)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _FAN_IN
    return max(8, min(_FAN_IN, soft // 2 - 16))


def _lazy(path: Path, stats: ReadStats | None, day_base) -> Iterator[Event]:
    """The events of ``path``, its file opened only when the first is asked for."""
    yield from _file_events(path, stats, day_base, True)


def _spill(items: Iterable[tuple]) -> Iterator[tuple]:
    """``items`` written to a temporary file now, and read back lazily."""
    spill = tempfile.TemporaryFile(prefix="virt-debug-merge-")
    for item in items:
        pickle.dump(item, spill, pickle.HIGHEST_PROTOCOL)
    spill.seek(0)
    return _unspill(spill)


def _unspill(spill) -> Iterator[tuple]:
    with spill:
        while True:
            try:
                yield pickle.load(spill)
            except EOFError:
                return


def _set_day_base(group: list[Path]):
    """For -t/-tt members of a set that also holds -ttt members: the day of the
    -ttt times (else each file's own mtime decides, see ``_day_base``)."""
    for path in group:
        epoch = _first_epoch(path)
        if epoch is not None:
            break
    else:
        return None
    ref = datetime.fromtimestamp(epoch)

    def base(first_tod: float) -> float:
        # The midnight that puts the first time of day closest to the -ttt time.
        days = [ref.date() + timedelta(days=d) for d in (-1, 0, 1)]
        bases = [datetime(d.year, d.month, d.day).timestamp() for d in days]
        return min(bases, key=lambda b: abs(b + first_tod - epoch))

    return base


def _first_epoch(path: Path) -> float | None:
    """The epoch time (-ttt) of the first record of ``path``, if it has one."""
    try:
        with _open(path) as handle:
            for _ in range(8):
                line = handle.readline(4096)
                if line.strip():
                    break
    except (OSError, EOFError, ValueError):
        return None
    # Every part of PREFIX is optional: it matches any line.
    prefix = PREFIX.match(line.strip())
    ts = prefix.group(5) if prefix and line.strip() else None
    if ts is None or ":" in ts:
        return None
    value = float(ts)
    return value if 1e8 <= value < 1e11 else None


def _resolve_unprefixed(events: Iterator[Event]) -> Iterator[Event]:
    """Give lines printed without a pid (pid 0) the pid they belong to.

    strace prints no pid while it traces a single process: in a stderr capture the
    first process's early lines have none, and lines go bare again whenever one
    process is left. The first process is the first pid seen that it did not create
    (or the pid named by an initial ``attached`` note); its bare lines are held back,
    at most ``_HOLD`` of them, until that pid is known. A file with no pid at all
    keeps 0 throughout.
    """
    first: int | None = None
    held: list[Event] = []
    children: set[int] = set()
    for event in events:
        pid = getattr(event, "pid", None)
        current: Event | None = event
        if pid is None or pid == 0:
            if type(event) is Syscall and event.name in _FORKS and event.retval:
                children.add(event.retval)
            held.append(event)
            if len(held) <= _HOLD:
                continue
            first, current = 0, None
        elif pid in children or (type(event) is Note and event.kind == "attached"):
            # A child of the first process, or a -p attach before any bare line.
            if not any(getattr(e, "pid", None) == 0 for e in held):
                first = pid
            else:
                children.add(pid)
                held.append(event)
                continue
        else:
            first = pid

        for early in held:
            if first and not isinstance(early, Unparsed) and early.pid == 0:
                early.pid = first
            yield early
        if current is not None:
            yield current
        if not held and pid not in children and type(event) is not Note:
            # Every line has a pid column (strace -f -o FILE): nothing to resolve.
            yield from events
            return
        held.clear()
        break
    else:
        yield from held
        return

    live: set[int] = {first} if first else set()
    for event in events:
        pid = getattr(event, "pid", None)
        if pid == 0 and first and not isinstance(event, Unparsed):
            event.pid = next(iter(live)) if len(live) == 1 else first
        elif pid:
            if type(event) is Exit:
                live.discard(pid)
            else:
                live.add(pid)
        yield event


def _keyed(events: Iterable[Event], n: int) -> Iterator[tuple]:
    last = float("-inf")
    for seq, event in enumerate(events):
        time = getattr(event, "time", None)
        if time is not None:
            last = time
        yield last, n, seq, event


def _file_events(
    path: Path, stats: ReadStats | None, day_base=None, in_set: bool = False
) -> Iterator[Event]:
    member = _SET_MEMBER.match(path.name)
    pid = int(member.group(2)) if member and len(member.group(2)) <= 7 else 0
    try:
        handle = _open(path)
    except OSError as e:
        if in_set and e.errno in (errno.ENOENT, errno.ELOOP):
            # One member of a -ff set vanished (or is a dangling link): the rest
            # of the set still tells the story. Shown as an unreadable "line 0".
            log.warning("skipping %s: %s", path, e.strerror)
            why = f"file of the -ff set skipped: {e.strerror}"
            return iter([Unparsed(str(path), 0, str(path), why)])
        if e.errno in (errno.EMFILE, errno.ENFILE):
            hint = "too many open files: raise the limit (ulimit -n)"
        elif e.errno == errno.ENOENT:
            hint = "the file vanished or is a dangling link"
        else:
            hint = "check the file's permissions"
        raise TraceInputError(f"cannot read {path}: {e.strerror}", hint) from e

    reader = FileReader(str(path), pid, day_base or _day_base(path), total=stats)
    # Lines are read LONGEST characters at most at a time: input without newlines
    # (/dev/zero, a sparse file) must not fill the memory.
    lines = iter(functools.partial(handle.readline, LONGEST), "")
    if pid:
        return reader.events(lines, handle)

    # Only a file whose lines start without a pid needs them resolved.
    early = []
    for line in lines:
        early.append(line)
        if line.strip() or len(line) >= LONGEST:
            break
    head = early[-1][:12].partition(" ")[0] if early else ""
    events = reader.events(itertools.chain(early, lines), handle)
    if head.isdecimal() and len(head) <= 8:
        return events
    return _resolve_unprefixed(events)


def _open(path: Path):
    # Text mode splits on "\n" only, so line numbers match `wc -l`; bytes that are not
    # UTF-8 come out as "\xNN", the way strace itself escapes them.
    if path.suffix == ".gz":
        return gzip.open(
            path, "rt", encoding="utf-8", errors="backslashreplace", newline="\n"
        )
    return open(path, encoding="utf-8", errors="backslashreplace", newline="\n")


def _day_base(path: Path):
    """Maps the first time of day to the local midnight (epoch) it counts from."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    end = datetime.fromtimestamp(mtime)
    end_tod = end.hour * 3600 + end.minute * 60 + end.second + 1

    def base(first_tod: float) -> float:
        day: date = end.date()
        if first_tod > end_tod:
            day -= timedelta(days=1)
        return datetime(day.year, day.month, day.day).timestamp()

    return base


def _special(path: Path) -> bool:
    """A FIFO, socket or device found in a directory: opening one may block for ever,
    or never end. Skipped, and said so."""
    # A dangling link does not exist: it is kept, for the reader to say why.
    if path.exists() and not path.is_file():
        log.warning("skipping %s: not a regular file", path)
        return True
    return False


def _is_text(path: Path) -> bool:
    """Whether a regular file found in a directory may be strace output (core.PID is
    not; a gzipped trace is)."""
    try:
        with open(path, "rb") as f:
            start = f.read(512)
    except OSError:
        return True  # named like a trace: let the reader report why it cannot read it
    if start.startswith(b"\x1f\x8b"):
        return True  # gzip: read through zcat's format
    return b"\0" not in start and not start.startswith(b"\x7fELF")


def _set_name(name: str) -> str:
    m = _SET_MEMBER.match(name)
    return m.group(1) if m else name


def _member_order(path: Path) -> tuple:
    m = _SET_MEMBER.match(path.name)
    return (m.group(1), int(m.group(2))) if m else (path.name, -1)


def _walk(root: Path, denied: list[str]) -> Iterator[Path]:
    """Files under ``root``; the folders that cannot be listed go to ``denied``."""

    def report(e: OSError) -> None:
        log.warning("cannot list %s: %s", e.filename, e.strerror)
        denied.append(str(e.filename))

    for dirpath, dirnames, filenames in os.walk(root, onerror=report):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath, name)
