"""The first summary after a run: how QEMU ended, what failed, what QEMU said.

The trace analysis (``virt_debug.trace.analyze_paths`` and ``trace.report.render``)
explains each launch when it is available. Until then, and whenever it cannot read a
trace, a plain reading of the wrapper's files stands in: ``status``, the failed calls
of ``strace.log`` grouped by call, errno and path, the threads seen, and QEMU's last
error line from libvirt's domain log.
"""

import logging
import re
from collections import Counter
from pathlib import Path

from virt_debug.backends.libvirt import collect, outputs
from virt_debug.backends.libvirt.session import RunResult

log = logging.getLogger(__name__)

# "<pid>[<comm>] <time> call(args) = -1 ERRNO (text)" as strace -f -tt [-Y] writes it.
_FAILED = re.compile(
    r"^(?P<pid>\d+)(?:<[^>]*>)?\s+[\d:.]+\s+(?P<call>\w+)\((?P<args>.*)\)\s+=\s+-1\s+"
    r"(?P<errno>E[A-Z0-9]+)"
)
_PID = re.compile(r"^(\d+)(?:<([^>]*)>)?\s")
_ROUTINE_ERRNOS = {"ENOENT", "EAGAIN", "EINTR", "ENOTCONN", "EINPROGRESS", "ENOSYS"}
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_MAX_GROUPS = 12

_ENDED = {
    "guest stopped": "the guest stopped",
    "duration": "the duration was reached",
    "watch": "what the caller waited for happened",
    "interrupted": "interrupted (Ctrl-C or SIGTERM)",
    "start failed": "the start failed",
}


def _stopped_by_us(result: RunResult) -> bool:
    return result.ended_by in ("duration", "interrupted", "watch")


def _launch_failed(result: RunResult, launch: Path) -> str | None:
    """QEMU's status if that launch failed by itself, else None."""
    status = collect.read_status(launch)
    if status is None or status == "exit 0":
        return None
    sent = outputs.forwarded(launch)
    if sent and (status == f"signal {sent}" or _stopped_by_us(result)):
        return None
    if _stopped_by_us(result) and status == "signal KILL":
        return None  # libvirt's escalation when our stop took long
    return status


def qemu_failed(result: RunResult) -> bool:
    """QEMU failed to start, or one of its launches died by itself."""
    if result.ended_by == "start failed":
        return True
    return any(_launch_failed(result, launch) for launch in result.launches)


def headline(result: RunResult) -> str:
    """One plain sentence first: did QEMU fail, or did it run fine?"""
    if result.ended_by == "start failed":
        return "QEMU failed to start; what went wrong is below."
    failed = [s for s in (_launch_failed(result, x) for x in result.launches) if s]
    if failed:
        return f"QEMU failed: it ended by itself with {failed[-1]}; details below."
    if not result.launches:
        return "QEMU never started under the wrapper."
    traced = result.timings.get("traced")
    after = f" after {traced:.0f} s" if traced is not None else ""
    if _stopped_by_us(result) and not result.started:
        return (
            "virt-debug stopped QEMU before the guest started (libvirt was still "
            "starting it); no failure found."
        )
    if _stopped_by_us(result):
        return (
            f"QEMU ran normally and was stopped by virt-debug{after}; no failure found."
        )
    return f"QEMU ran and ended normally{after}; no failure found."


def render_summary(result: RunResult, *, color: bool = False, width: int = 80) -> str:
    """The summary text for a finished run."""
    lines = [headline(result)]
    lines.append(f"domain {result.domain}: {_ENDED.get(result.ended_by, 'run ended')}")
    if result.start_error:
        lines.append(f"libvirt: {result.start_error.splitlines()[0]}")
    if not result.launches:
        lines.append("no traced launch of QEMU (it never started under the wrapper)")
    for launch in result.launches:
        lines += ["", f"launch {launch.name}:"]
        lines.append(_explain(launch, color=color, width=width))

    message = collect.last_qemu_message(result.qemu_log)
    if message and not any(message in line for line in lines):
        lines += ["", f"QEMU said (libvirt log): {message}"]
    lines += ["", f"output: {result.output}"]
    if result.restore_error:
        lines.append(f"WARNING: {result.restore_error}")
    return "\n".join(lines)


def _explain(launch: Path, *, color: bool, width: int) -> str:
    if not (launch / "strace.log").is_file():
        # ltrace, perf, valgrind, gdbserver: nothing for the strace analysis to read.
        return outputs.explain(launch)
    # The trace analysis explains the launch; the plain reading stands in only when
    # it cannot (see the module docstring).
    try:
        from virt_debug.trace import analyze_paths
        from virt_debug.trace.report import render
    except ImportError:
        return plain_launch_summary(launch)
    try:
        return render(analyze_paths([launch]), "text", color=color, width=width)
    except Exception as e:  # the run is over; a reader bug must not hide its result
        log.warning("the trace analysis failed on %s (%s); plain summary", launch, e)
        return plain_launch_summary(launch)


def plain_launch_summary(launch: Path) -> str:
    """A summary from the wrapper's files alone."""
    status = collect.read_status(launch) or "unknown (no status file)"
    lines = [f"  QEMU ended: {status}"]

    trace = launch / "strace.log"
    if not trace.is_file():
        lines.append("  no strace.log in this launch")
        return "\n".join(lines)
    threads, failures = read_failures(trace)
    names = sorted({name for name in threads.values() if name})
    lines.append(f"  threads traced: {len(threads)} ({', '.join(names) or 'no names'})")
    if failures:
        lines.append("  failed calls (count  call  errno  path), telling ones first:")
        ranked = sorted(
            failures.items(),
            key=lambda kv: (_routine(kv[0][1]), kv[0][2] is None, -kv[1]),
        )
        for (call, errno, path), count in ranked[:_MAX_GROUPS]:
            lines.append(f"    {count:5d}  {call}  {errno}  {path or '-'}")
        if len(failures) > _MAX_GROUPS:
            lines.append(f"    ... and {len(failures) - _MAX_GROUPS} more groups")
    return "\n".join(lines)


def _routine(errno: str) -> bool:
    # Probing for optional files and sockets fails all the time; those go last.
    return errno in _ROUTINE_ERRNOS


def read_failures(trace: Path) -> tuple[dict[int, str], Counter]:
    """Threads (id: last name seen) and failed calls grouped by (call, errno, path)."""
    threads: dict[int, str] = {}
    failures: Counter = Counter()
    with trace.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            pid = _PID.match(line)
            if pid:
                threads[int(pid.group(1))] = pid.group(2) or ""
            match = _FAILED.match(line)
            if match:
                path = _STRING.search(match.group("args"))
                key = (
                    match.group("call"),
                    match.group("errno"),
                    path and path.group(1),
                )
                failures[key] += 1
    return threads, failures
