"""The end of the analysis pass: turn the bounded aggregates into an ``Analysis``."""

import re
from typing import TYPE_CHECKING

from virt_debug.trace.analysis import (
    MAX_FILES,
    MAX_GROUPS,
    MAX_LANES,
    TIMELINE_HEAD,
    TIMELINE_TAIL,
    Analysis,
)
from virt_debug.trace.evidence import Evidence, evidence_of
from virt_debug.trace.launchdir import cross_check, launch_dir, read_launch
from virt_debug.trace.results import Ended, Lane, SyscallStat, ThreadInfo
from virt_debug.trace.strings import REDACTED

if TYPE_CHECKING:
    from virt_debug.trace.analysis import _Pass

_ARGV_SECRET = re.compile(r"((?:^|[,\s])(?:data|password|passwd)=)((?:,,|[^,\s\"])+)")
# A line the reader could not read (cut short, say) that reads data: which file the
# fd is cannot be known there, so every string in it is hidden.
_READ_CALL = re.compile(r"\b(?:read|readv|pread64|preadv2?|recv|recvfrom|recvmsg)\(")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*+"?')
_JSON_SECRET = re.compile(
    r'((?:\\?")(?:data|password|passwd|secret)(?:\\?")\s*:\s*\\?")((?:[^"\\]++|\\.)*+)'
)


def finish(run: "_Pass", sources: list[str]) -> Analysis:
    """Assemble the result; with redaction on, scrub what it keeps one last time."""
    tracker = run.tracker
    result = Analysis(
        sources=sources,
        redacted=run.redact,
        redacted_calls=run.redactor.calls,
        events=run.events + run.calls,
        syscalls_total=run.calls,
        start_time=run.start,
        end_time=run.end,
        has_durations=any(stat[2] for stat in run.stats.values()),
        qemu_pid=run.qemu_tgid,
        qemu_argv=list(run.qemu_argv),
        qemu_stderr=run.stderr.text,
        unparsed=run.unparsed,
        unparsed_count=run.unparsed_count,
        monitor=sorted(run.monitor.messages, key=lambda m: (m.time or 0.0, m.line)),
        secret_reads=run.secret_reads,
    )

    groups = sorted(run.groups.values(), key=lambda g: (g.first_time or 0.0, -g.count))
    result.failures = [g for g in groups if g.expected is None]
    result.expected = [g for g in groups if g.expected is not None]
    result.expected_count = sum(g.count for g in result.expected)
    result.ended = _ended(run)
    _launch(run, sources, result)
    result.hints = run.rules.hints(
        qemu_tgid=run.qemu_tgid,
        stderr=run.stderr,
        ended_signal=result.ended.signal if result.ended else None,
        ended_code=result.ended.code if result.ended else None,
        core_dumped=bool(result.ended and result.ended.core_dumped),
        ended_evidence=result.ended.evidence if result.ended else None,
        last_calls=result.ended.last_calls if result.ended else [],
    )

    for thread in tracker.threads.values():
        result.threads.append(
            ThreadInfo(
                tid=thread.tid,
                tgid=thread.tgid,
                parent=thread.parent,
                name=thread.comm,
                is_thread=thread.is_thread,
                first_time=thread.first_time,
                last_time=thread.last_time,
                calls=thread.calls,
                ended=thread.ended,
                execs=list(thread.execs),
            )
        )
    has = result.has_durations
    stats = [
        SyscallStat(name, calls, errors, seconds if has else None)
        for name, (calls, errors, seconds, _) in run.stats.items()
    ]
    result.syscalls = sorted(stats, key=lambda s: (-s.calls, s.name))
    result.files = sorted(run.files.values(), key=lambda f: (-f.failed, -f.ok, f.path))
    for tid, lane in run.lanes.items():
        known = tracker.threads.get(tid)
        calls = lane.head + list(lane.tail or ())
        result.timeline.append(
            Lane(tid, known.comm if known else None, calls, lane.marks, lane.omitted)
        )
    _notes(run, result)
    if run.redact:
        _scrub(result, run.redactor.scrub)
    return result


def _launch(run: "_Pass", sources: list[str], result: Analysis) -> None:
    """Use the wrapper's files beside QEMU's trace: its stderr (when the trace has
    no writes to fd 2: the default filter leaves write out), filter and status."""
    where = run.qemu_source or (sources[0] if sources else None)
    directory = launch_dir(where) if where else None
    if directory is None:
        return
    launch = read_launch(directory)
    result.launch_dir = launch.directory
    result.not_traced = launch.not_traced
    result.launch_status = launch.status
    if not run.stderr.pieces and launch.stderr is not None:
        # From here on (root-cause rules, notes) QEMU's stderr is the file's.
        run.stderr = launch.stderr
        result.qemu_stderr = launch.stderr.text
        result.stderr_file = str(directory / "stderr")
    result.notes += cross_check(result.ended, launch)


def _ended(run: "_Pass") -> Ended | None:
    tracker = run.tracker
    pid = run.qemu_tgid if run.qemu_tgid is not None else tracker.first_pid
    if pid is None:
        return None
    leader = tracker.threads.get(pid)
    program = run.qemu_program or (
        leader.execs[-1] if leader and leader.execs else None
    )
    event = run.exit_event
    if event is None:
        ended = Ended(pid, program, "running")
        tid = run.last_tid
    else:
        how = "killed" if event.signal else "exited"
        if event.signal:
            core = " (core dumped)" if event.core_dumped else ""
            text = f"{event.pid} +++ killed by {event.signal}{core} +++"
        else:
            text = f"{event.pid} +++ exited with {event.code} +++"
        ended = Ended(pid, program, how, event.code, event.signal, event.core_dumped)
        ended.time = event.time
        ended.evidence = Evidence(event.source, event.line_no, event.time, text)
        # The thread that ended it: the one the fatal signal hit, the one that
        # called exit_group, else the last one to make a call.
        tid = run.fatal.get(event.signal or "") or run.exit_tid or run.last_tid
    if tid is not None:
        thread = tracker.threads.get(tid)
        ended.tid = tid
        ended.thread = thread.comm if thread else None
        lane = run.lanes.get(tid)
        if lane is not None:
            ended.last_calls = [evidence_of(call) for call in lane.last]
    return ended


def _notes(run: "_Pass", result: Analysis) -> None:
    notes = result.notes
    if run.groups_dropped:
        notes.append(
            f"{run.groups_dropped} failed calls not grouped: more than {MAX_GROUPS} "
            "distinct (syscall, errno, path) groups"
        )
    if run.files_dropped:
        notes.append(f"{run.files_dropped} opens not listed: over {MAX_FILES} paths")
    capped = [lane for lane in result.timeline if lane.omitted]
    if capped:
        notes.append(
            f"timeline of {len(capped)} thread(s) keeps the first {TIMELINE_HEAD} and "
            f"last {TIMELINE_TAIL} calls of each; "
            f"{sum(lane.omitted for lane in capped)} calls left out between them"
        )
    if len(run.lanes) > MAX_LANES:
        notes.append(
            f"{len(run.lanes) - MAX_LANES} threads past the first {MAX_LANES} have "
            "only their marks on the timeline"
        )
    if run.threads_dropped:
        notes.append(
            f"{run.threads_dropped} calls of threads past the first {len(run.lanes)} "
            "(outside QEMU) are counted but not on the timeline"
        )
    if run.stderr.dropped:
        notes.append(f"QEMU's stderr: the first {run.stderr.dropped} characters cut")
    if run.monitor.dropped:
        notes.append(
            f"monitor: the first {run.monitor.dropped} messages left out, "
            f"the last {len(run.monitor.messages)} kept"
        )
    if run.qemu_tgid is None:
        notes.append("no execve of a qemu program seen: the first process stands in")


def _scrub_text(text: str, scrub) -> str:
    text = _ARGV_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _JSON_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return scrub(text)


def _scrub(result: Analysis, scrub) -> None:
    """Last line of defence: known secret values and secret-looking options."""

    def fix(evidence: Evidence) -> None:
        evidence.text = _scrub_text(evidence.text, scrub)

    result.qemu_stderr = _scrub_text(result.qemu_stderr, scrub)
    result.qemu_argv = [_scrub_text(arg, scrub) for arg in result.qemu_argv]
    for evidence in result.unparsed:
        # A line the reader could not read may still be a secret file's read.
        if "master-key" in evidence.text or "/secrets/" in evidence.text:
            evidence.text = REDACTED
        elif _READ_CALL.search(evidence.text):
            evidence.text = _QUOTED.sub(f'"{REDACTED}"', evidence.text)
        fix(evidence)
    for group in result.failures + result.expected:
        for evidence in group.examples:
            fix(evidence)
    for hint in result.hints:
        hint.title = _scrub_text(hint.title, scrub)
        for evidence in hint.evidence:
            fix(evidence)
    if result.ended is not None:
        for evidence in result.ended.last_calls:
            fix(evidence)
    for message in result.monitor:
        message.text = _scrub_text(message.text, scrub)
    for lane in result.timeline:
        for mark in lane.marks:
            mark.label = _scrub_text(mark.label, scrub)
