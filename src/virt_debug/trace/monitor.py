"""QEMU's monitor conversation, put back together from the socket calls.

QEMU reads its monitor one byte per ``recvmsg``, so a QMP command libvirt sent is
spread over dozens of calls. ``MonitorLog`` joins what each socket fd of QEMU
received and sent into newline-ended messages: the commands before a failure say
what was being asked of QEMU. Secret values in them are redacted with the rest.
"""

import re
from dataclasses import dataclass

from virt_debug.trace import syntax
from virt_debug.trace.model import Syscall
from virt_debug.trace.redact import INBOUND, OUTBOUND, payload_cut, stream_key
from virt_debug.trace.strings import REDACTED

MAX_MESSAGES = 200
MAX_MESSAGE = 4096
SOCKETS = ("UNIX", "TCP", "socket:", "UDP")
_KEYS = r'"(?:data|password|passwd|secret|new-secret)"\s*:\s*"'
_JSON_SECRET = re.compile(r"(" + _KEYS + r')((?:[^"\\]++|\\.)*+)(")')
_CUT_SECRET = re.compile(r"(" + _KEYS + r')((?:[^"\\]++|\\.)*+)()$')


@dataclass
class MonitorMessage:
    time: float | None
    tid: int
    fd: int
    direction: str  # "in" (QEMU received it) or "out" (QEMU sent it)
    socket: str | None  # the fd's -y decoration or path, when known
    line: int  # trace line of the message's first byte
    text: str
    truncated: bool = False


def redact_json(text: str) -> str:
    """``text`` with the values of secret JSON keys replaced, cut ones included."""
    text = _JSON_SECRET.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return _CUT_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class MonitorLog:
    def __init__(self, redact: bool) -> None:
        self.redact = redact
        self.messages: list[MonitorMessage] = []
        self.dropped = 0
        self._open: dict[tuple[int, int, bool], tuple[bytearray, Syscall]] = {}

    def feed(self, call: Syscall, tgid: int, data: bytes | None = None) -> None:
        """Add what ``call`` moved (``data``: its bytes, when already decoded)."""
        name = call.name
        inbound = name in INBOUND
        if not inbound and name not in OUTBOUND:
            return
        fd_path = call.fd_path
        if fd_path is None or not fd_path.startswith(SOCKETS):
            return
        if call.retval is None or call.retval <= 0:
            return
        cut = False
        if data is None or call.args.find('"...') >= 0:
            data, cut = payload_cut(name, call.args)
        if not data:
            return
        fd = call.fd  # the tracker's reading of the first argument
        if fd is None:
            num = syntax.leading_int(call.args)
            if num is None:
                return
            fd = num[0]

        self.add(call, fd, stream_key(fd_path, tgid, fd, inbound), inbound, data, cut)

    def add(
        self, call: Syscall, fd: int, key: tuple, inbound: bool, data: bytes, cut: bool
    ) -> None:
        """``feed``'s last step, for a socket call already read (``key``: its
        ``stream_key``) that moved ``data``; ``cut``: strace cut it short."""
        pending = self._open.get(key)
        if pending is None:
            pending = self._open[key] = (bytearray(), call)
        buf = pending[0]
        buf += data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            self._emit(pending[1], fd, inbound, bytes(buf[:end]), False)
            del buf[: end + 1]
            pending = self._open[key] = (buf, call)
        if cut or len(buf) > MAX_MESSAGE:
            # strace cut the data (-s) or no newline came: the rest is unknown, so
            # the message ends here, marked, and the next call starts a new one.
            self._emit(pending[1], fd, inbound, bytes(buf), True)
            buf.clear()
        if not buf:
            del self._open[key]

    def _emit(
        self, first: Syscall, fd: int, inbound: bool, raw: bytes, cut: bool
    ) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        if len(self.messages) >= MAX_MESSAGES:
            # Keep the latest: the conversation just before the end matters most.
            self.messages.pop(0)
            self.dropped += 1
        if self.redact:
            text = redact_json(text)
        self.messages.append(
            MonitorMessage(
                first.time,
                first.pid,
                fd,
                "in" if inbound else "out",
                first.fd_path,
                first.line_no,
                text,
                cut,
            )
        )
