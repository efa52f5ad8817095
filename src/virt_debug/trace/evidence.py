"""Evidence lines (where a finding comes from) and QEMU's stderr as it wrote it."""

import re
from collections import deque
from dataclasses import dataclass

from virt_debug.trace.model import Syscall
from virt_debug.trace.strings import LITERAL, unescape

MAX_TEXT = 300
MAX_STDERR = 65536
TRUNCATED = "[...]"
_IOV = re.compile(r'iov_base="((?:[^"\\]++|\\.)*+)"(\.\.\.)?', re.S)


@dataclass
class Evidence:
    """One record of the trace: its file, line number, time and (shortened) text."""

    source: str
    line: int
    time: float | None
    text: str


def call_text(call: Syscall, limit: int = MAX_TEXT) -> str:
    """The call as strace showed it (rebuilt), arguments shortened past ``limit``."""
    args = call.args
    if len(args) > limit:
        args = args[:limit] + "…"
    head = f"{call.pid} " if call.pid else ""
    return f"{head}{call.name}({args}) = {call.result}"


def evidence_of(call: Syscall) -> Evidence:
    return Evidence(call.source, call.line_no, call.time, call_text(call))


class StderrLog:
    """What QEMU wrote to fd 2, decoded, with the calls that wrote each piece.

    Only the last ``MAX_STDERR`` characters are kept: the error that ended QEMU is
    at the end. Pieces strace cut short (``-s``) end with ``[...]``.
    """

    def __init__(self) -> None:
        self.pieces: deque[tuple[str, Evidence]] = deque()
        self.size = 0
        self.dropped = 0

    def add(self, call: Syscall) -> None:
        if call.retval is None or call.retval < 0:
            return
        if call.name == "writev":
            found = [(m.group(1), m.group(2)) for m in _IOV.finditer(call.args)]
        else:
            m = LITERAL.search(call.args, call.args.find(","))
            found = [(m.group(1), m.group(2))] if m else []
        text = "".join(
            unescape(raw).decode("utf-8", "replace") + (TRUNCATED if cut else "")
            for raw, cut in found
        )
        if text:
            self.keep(text, evidence_of(call))

    def keep(self, text: str, evidence: Evidence) -> None:
        """Add one piece of QEMU's stderr and where it comes from."""
        if len(text) > MAX_STDERR:
            # One write bigger than all we keep: its end is what counts.
            self.dropped += len(text) - MAX_STDERR
            text = text[-MAX_STDERR:]
        self.pieces.append((text, evidence))
        self.size += len(text)
        while self.size > MAX_STDERR and len(self.pieces) > 1:
            old, _ = self.pieces.popleft()
            self.size -= len(old)
            self.dropped += len(old)

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.pieces)

    def evidence_for(self, needle: str) -> list[Evidence]:
        """QEMU's stderr line holding ``needle``, as one evidence line: where its
        first write is, and the whole message however many writes it took."""
        text = self.text
        pos = text.find(needle)
        if pos < 0:
            return []
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        writes = []
        offset = 0
        for piece, evidence in self.pieces:
            if offset < end and offset + len(piece) > start:
                writes.append(evidence)
            offset += len(piece)
        if not writes:
            return []
        first, last = writes[0], writes[-1]
        where = (
            f"line {first.line}" if first is last else f"lines {first.line}-{last.line}"
        )
        message = text[start:end].strip()
        return [
            Evidence(
                first.source,
                first.line,
                first.time,
                f"QEMU stderr ({where}): {message}",
            )
        ]

    def last_line_evidence(self) -> list[Evidence]:
        """The writes of the last non-empty line (QEMU's last word)."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        return self.evidence_for(lines[-1]) if lines else []
