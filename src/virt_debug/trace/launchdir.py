"""What the emulator wrapper keeps beside a trace: QEMU's stderr, filter and status.

Each launch directory the wrapper makes (see ``virt_debug.launch.wrapper``) holds, next
to ``strace.log``, ``argv`` and ``wrapper.log``:

* ``stderr``: what QEMU (and the debugger) wrote to stderr. strace's default mode does
  not trace ``write``, so QEMU's own error message is only there;
* ``filter``: the calls the default mode leaves out, one line (``recvmsg ppoll ...``);
* ``status``: how QEMU ended as the wrapper saw it, ``exit N`` or ``signal NAME``
  (``signal TERM``: the wrapper forwarded libvirt's SIGTERM, whatever QEMU did then).

``read_launch`` reads them without trusting them: sizes are bounded, bytes that are not
UTF-8 are replaced, and a line that does not read as expected is ignored.
"""

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from virt_debug.trace.evidence import MAX_STDERR, Evidence, StderrLog
from virt_debug.trace.results import Ended

log = logging.getLogger(__name__)

# A directory is a launch directory when the wrapper's own files are there.
_MARKERS = ("wrapper.log", "argv")
_MAX_SMALL = 4096  # filter and status are one short line each
_CALL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_STATUS = re.compile(r"^(exit) (\d{1,3})$|^(signal) ([A-Z0-9+-]{1,12})$")


@dataclass
class LaunchFiles:
    """The wrapper's files of one launch directory (each None or empty if absent)."""

    directory: str
    stderr: StderrLog | None = None  # the stderr file, one piece per line
    not_traced: list[str] = field(default_factory=list)
    status: str | None = None  # "exit 1", "signal TERM"
    status_code: int | None = None
    status_signal: str | None = None  # "SIGTERM"
    status_evidence: Evidence | None = None


def launch_dir(trace: str | Path) -> Path | None:
    """The launch directory a trace file (or a directory given) belongs to, if any."""
    path = Path(trace)
    for candidate in (path, path.parent):
        try:
            if candidate.is_dir() and any(
                (candidate / name).is_file() for name in _MARKERS
            ):
                return candidate
        except OSError:
            continue
    return None


def read_launch(directory: Path) -> LaunchFiles:
    """The stderr, filter and status files of ``directory``; missing ones stay empty."""
    found = LaunchFiles(str(directory))
    found.stderr = _read_stderr(directory / "stderr")

    # One line of call names; anything else in the file is not the wrapper's.
    text = _read_small(directory / "filter").partition("\n")[0]
    names = [n for n in text.split() if _CALL_NAME.match(n)]
    found.not_traced = list(dict.fromkeys(names))[:64]

    text = _read_small(directory / "status")
    m = _STATUS.match(text.strip()) if text else None
    if m is not None:
        found.status = m.group(0)
        if m.group(1):
            found.status_code = int(m.group(2))
        else:
            name = m.group(4)
            found.status_signal = name if name.startswith("SIG") else f"SIG{name}"
        found.status_evidence = Evidence(
            str(directory / "status"), 1, None, f"wrapper status: {found.status}"
        )
    return found


def _read_small(path: Path) -> str:
    if not path.is_file():
        return ""  # a FIFO would block the read for ever
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_SMALL).decode("utf-8", "replace")
    except OSError:
        return ""


def _read_stderr(path: Path) -> StderrLog | None:
    """The stderr file as a log with one piece per line; only its last MAX_STDERR
    bytes are read (the message that ended QEMU is at the end)."""
    if not path.is_file():
        return None  # a FIFO would block the read for ever
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            skipped = max(0, size - MAX_STDERR)
            # Line numbers count the lines of the part not read too.
            line_no = 1
            left = skipped
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                line_no += chunk.count(b"\n")
                left -= len(chunk)
            data = f.read(MAX_STDERR)
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return None

    stderr = StderrLog()
    stderr.dropped = skipped
    source = str(path)
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        if line.strip():
            stderr.keep(line, Evidence(source, line_no, None, line.rstrip("\n")))
        line_no += 1
    return stderr if stderr.pieces else None


def cross_check(ended: Ended | None, launch: LaunchFiles) -> list[str]:
    """Compare how the trace says QEMU ended with the wrapper's status file.

    When the trace stops before QEMU's end (strace killed, the trace cut) an ``exit
    N`` or ``signal KILL`` status tells the end instead, with the status file as its
    evidence. Returns notes for the report where the two disagree.
    """
    if ended is None or launch.status is None:
        return []
    said = f"the wrapper's status file says {launch.status!r}"
    code, signal = launch.status_code, launch.status_signal
    if ended.how == "running":
        if code is not None or signal == "SIGKILL":
            ended.how = "exited" if code is not None else "killed"
            ended.code, ended.signal = code, signal
            ended.evidence = launch.status_evidence
            return [f"the trace ends before QEMU does; {said}"]
        return [f"the trace ends before QEMU does; {said} (forwarded to QEMU)"]
    if ended.how == "exited":
        if code is not None and code != ended.code:
            return [f"QEMU exited with {ended.code} in the trace but {said}"]
        if signal is not None:
            # The wrapper forwarded libvirt's signal; QEMU then shut down itself.
            return [f"{said}: QEMU was asked to stop with {signal} and exited"]
        return []
    if signal is not None and signal == ended.signal:
        return []
    return [f"QEMU was killed by {ended.signal} in the trace but {said}"]
