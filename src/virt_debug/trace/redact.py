"""Keeps secrets out of every report: secret files, monitor messages, QEMU's argv.

Traces get attached to bug reports, and a full trace of a guest start carries the
guest's secrets: libvirt's master key file is read whole, ``-object secret,data=...``
sits in QEMU's argv, and secrets sent over the monitor (``object-add`` of a ``secret``)
arrive one byte per ``recvmsg``, so no single call shows them. The ``Redactor`` sees
every call once, in order, and rewrites the calls that carry secret bytes before
anything else keeps them: their string literals become ``<redacted>``.

Monitor traffic is followed as a byte stream per (process, fd, direction): a small
state machine over the JSON recognises a string value after a secret key (``"data"``,
``"password"``, ...) and marks its bytes secret, whichever calls carried them. The
values it learns are also scrubbed from any other text a report shows.
"""

import json
import os
import re
from collections.abc import Callable

from virt_debug.trace import syntax
from virt_debug.trace.model import Syscall
from virt_debug.trace.strings import LITERAL, REDACTED, str_array, unescape

SECRET_KEYS = frozenset({b"data", b"password", b"passwd", b"secret", b"new-secret"})
_FILE_IO = frozenset(
    {
        "read", "pread64", "readv", "preadv", "preadv2", "write", "pwrite64",
        "writev", "pwritev", "pwritev2",
    }
)  # fmt: skip
# The calls that move a stream's bytes in, and out (the monitor log reads them too).
INBOUND = frozenset({"read", "readv", "recv", "recvfrom", "recvmsg"})
OUTBOUND = frozenset({"write", "writev", "send", "sendto", "sendmsg"})
_EXECS = frozenset({"execve", "execveat"})
WATCHED = _FILE_IO | INBOUND | OUTBOUND | _EXECS | {"close"}
# What a monitor can be connected through (-y decorations); an fd nothing is known
# about counts too.
STREAMS = (
    "UNIX",
    "TCP",
    "UDP",
    "socket:",
    "pipe:",
    "/dev/pts/",
    "/dev/tty",
    "/dev/ptmx",
)
_IOV = re.compile(r'iov_base=("(?:[^"\\]++|\\.)*+")', re.S)
# key=value secrets in QEMU option strings, and JSON ones (escaped by strace: \").
# QEMU reads ",," inside an option value as a comma of the value.
_ARGV_KV = re.compile(r"((?:^|[,\s\"])(?:data|password|passwd)=)((?:,,|[^,\"\\]|\\.)+)")
# The same two, on an argument as QEMU gets it (strace's escapes undone).
_PLAIN_KV = re.compile(r"((?:^|[,\s\"])(?:data|password|passwd)=)((?:,,|[^,])+)")
_PLAIN_JSON = re.compile(
    r'("(?:data|password|passwd|secret|new-secret)"\s*:\s*")((?:[^"\\]++|\\.)*+)'
)
_ARGV_JSON = re.compile(
    r'(\\"(?:data|password|passwd|secret)\\"\s*:\s*\\")((?:[^"\\]|\\[^"])*)'
)
_MAX_VALUES = 200
_MAX_PAYLOADS = 1024
_MAX_CACHED = 1024  # longer argument texts are rarely repeated
_MAX_SECRET = 4096


def is_secret_path(path: str, extra: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a file holds a guest secret: libvirt's master key, secrets dirs."""
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    return (
        path.endswith("master-key.aes")
        or "/secrets/" in path
        or path.endswith(".secret")
        or path in extra
    )


class _Stream:
    """The JSON state of one direction of one fd: which bytes are secret."""

    __slots__ = ("state", "key", "value")

    def __init__(self) -> None:
        self.state = 0  # 0 outside strings, 1 in a string, 2 after one, 3 after a
        # secret key's colon, 4 in a secret value; +10 right after a backslash
        self.key = bytearray()
        self.value = bytearray()

    def feed(self, data: bytes, found: Callable[[bytes], None]) -> bool:
        """Advance over ``data``; True when any of its bytes belonged to a secret."""
        secret = False
        for byte in data:
            state = self.state
            if state == 4 or state == 14:
                secret = True
                if state == 14:
                    self.state = 4
                elif byte == 0x5C:
                    self.state = 14
                elif byte == 0x22:
                    self.state = 0
                    found(bytes(self.value))
                    self.value.clear()
                    continue
                if len(self.value) < _MAX_SECRET:
                    self.value.append(byte)
            elif state == 0:
                if byte == 0x22:
                    self.state = 1
                    self.key.clear()
            elif state == 1 or state == 11:
                if state == 11:
                    self.state = 1
                elif byte == 0x5C:
                    self.state = 11
                elif byte == 0x22:
                    self.state = 2
                    continue
                if len(self.key) < 32:
                    self.key.append(byte)
            elif state == 2:
                if byte == 0x3A:  # ":" after a key
                    self.state = 3 if _json_key(self.key) in SECRET_KEYS else 0
                elif byte == 0x22:
                    self.state = 1
                    self.key.clear()
                elif byte not in b" \t\r\n":
                    self.state = 0
            elif state == 3:
                if byte == 0x22:
                    self.state = 4
                    self.value.clear()
                elif byte not in b" \t\r\n":
                    self.state = 0
        return secret


def stream_key(fd_path: str | None, tgid: int, fd: int, inbound: bool) -> tuple:
    """Which byte stream a read or write belongs to. A socket's ``-y`` decoration
    names it system-wide (its inode): threads the tracker never saw created
    (``strace -p`` attaches to them all) still share one stream."""
    if fd_path and ":[" in fd_path:
        return (fd_path, inbound)
    return (tgid, fd, inbound)


def _json_key(raw: bytearray) -> bytes:
    """A key as JSON means it: ``"d\\u0061ta"`` is ``"data"`` to QEMU."""
    if 0x5C not in raw:
        return bytes(raw)
    try:
        return json.loads(b'"' + raw + b'"').encode()
    except ValueError:
        return bytes(raw)


class Redactor:
    """Feed it every call, in order, after the tracker: it hides what is secret."""

    def __init__(
        self, tgid_of: Callable[[int], int] | None = None, enabled: bool = True
    ) -> None:
        self.enabled = enabled  # off: only learn which files are secret (--no-redact)
        self.secret_files: set[str] = set()
        self.values: set[str] = set()  # secret values seen, scrubbed from other text
        self.calls = 0  # calls whose strings were hidden
        self._tgid_of = tgid_of or (lambda tid: tid)
        self._streams: dict[tuple, _Stream] = {}
        self._sockets: dict[tuple[int, int], str] = {}  # (tgid, fd) -> socket
        # The bytes of the last stream call, before hiding them: the monitor log
        # reads them instead of decoding the call a second time.
        self.last_payload: tuple[Syscall, bytes] | None = None
        # Monitor traffic repeats the same argument text (one byte per recvmsg):
        # each short text is decoded once.
        self._payloads: dict[str, tuple[str, bytes]] = {}

    def feed(self, call: Syscall, tgid: int | None = None) -> bool:
        """Hide the secret strings of ``call`` in place; True when it did.

        ``tgid``: the process of the calling thread, when the caller knows it.
        """
        name = call.name
        if name not in WATCHED:
            return False
        if name in _EXECS:
            return self._argv(call)
        if not self.enabled:
            return False
        if name == "close" and self._streams:
            self._forget(call)
            return False

        fd_path = call.fd_path
        if fd_path and name in _FILE_IO and not fd_path.startswith(STREAMS):
            # a relative path too, when the tracker could not resolve it
            if is_secret_path(fd_path, self.secret_files):
                if name.startswith(("read", "pread")) and call.retval:
                    self._learn_literals(call.args)
                return self._hide(call)
        if fd_path is not None and not fd_path.startswith(STREAMS):
            return False  # a file, an eventfd...: not a monitor connection

        inbound = name in INBOUND
        if not inbound and name not in OUTBOUND:
            return False
        if inbound and not (call.retval and call.retval > 0):
            return False
        args = call.args
        found = self._payloads.get(args)
        if found is not None and found[0] == name:
            data = found[1]
        else:
            data = payload(name, args)
            if len(args) <= _MAX_CACHED:
                if len(self._payloads) >= _MAX_PAYLOADS:
                    self._payloads.clear()
                self._payloads[args] = (name, data)
        self.last_payload = (call, data)
        if not data:
            return False
        fd = call.fd  # the tracker's reading of the first argument
        if fd is None:
            num = syntax.leading_int(args)
            if num is None:
                return False
            fd = num[0]
        if tgid is None:
            tgid = self._tgid_of(call.pid)
        return self.feed_stream(
            call, tgid, fd, stream_key(call.fd_path, tgid, fd, inbound), data
        )

    def feed_stream(
        self, call: Syscall, tgid: int, fd: int, key: tuple, data: bytes
    ) -> bool:
        """``feed``'s last step, for a stream call already read: ``data`` its bytes,
        ``fd`` its fd, ``key`` its ``stream_key``. True when it hid the call."""
        if len(key) == 2 and call.fd_path:
            self._sockets[(tgid, fd)] = call.fd_path  # for a close without -y
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        if stream.feed(data, self._learn):
            return self._hide(call)
        return False

    def scrub(self, text: str) -> str:
        """``text`` with every secret value learnt so far replaced."""
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def _hide(self, call: Syscall) -> bool:
        args = call.args
        start = 0
        num = syntax.leading_int(args)
        if num is not None and args[num[1] : num[1] + 1] == "<":
            found = syntax.fd_decoration(args, num[1])
            start = found[1] if found else 0
        call.args = args[:start] + LITERAL.sub(REDACTED, args[start:])
        self.calls += 1
        return True

    def _argv(self, call: Syscall) -> bool:
        args = call.args
        for arg in str_array(args):
            self._secret_object_file(arg)

        if not self.enabled:
            return False

        def kv(m: re.Match) -> str:
            self._learn_escaped(m.group(2))
            return m.group(1) + REDACTED

        new = _ARGV_JSON.sub(kv, _ARGV_KV.sub(kv, args))
        # strace -x/-xx (and octal escapes) hide the options from the patterns
        # above: read each string as QEMU got it, rewrite those holding a secret.
        new = LITERAL.sub(self._argv_string, new)
        if new == args:
            return False
        call.args = new
        self.calls += 1
        return True

    def _argv_string(self, m: re.Match) -> str:
        text = unescape(m.group(1)).decode("utf-8", "surrogateescape")

        def hide(found: re.Match) -> str:
            if found.group(2) != REDACTED:
                self._add(found.group(2))
                self._add(found.group(2).replace(",,", ","))
            return found.group(1) + REDACTED

        clean = _PLAIN_JSON.sub(hide, _PLAIN_KV.sub(hide, text))
        if clean == text:
            return m.group(0)
        return f'"{_escape(clean)}"{m.group(2) or ""}'

    def _secret_object_file(self, arg: str) -> None:
        # -object secret,id=sec0,file=/path  or  {"qom-type":"secret",...,"file":...}
        if arg.startswith("secret,"):
            for part in arg.split(","):
                if part.startswith("file="):
                    self.secret_files.add(os.path.normpath(part[5:]))
        elif arg.startswith("{") and '"secret"' in arg:
            try:
                obj = json.loads(arg)
            except ValueError:
                return
            if isinstance(obj, dict) and obj.get("qom-type") == "secret":
                path = obj.get("file")
                if isinstance(path, str):
                    self.secret_files.add(os.path.normpath(path))

    def _forget(self, call: Syscall) -> None:
        num = syntax.leading_int(call.args)
        if num is not None:
            tgid = self._tgid_of(call.pid)
            self._streams.pop((tgid, num[0], True), None)
            self._streams.pop((tgid, num[0], False), None)
            socket = self._sockets.pop((tgid, num[0]), None) or call.fd_path
            self._streams.pop((socket, True), None)
            self._streams.pop((socket, False), None)

    def _learn(self, value: bytes) -> None:
        # As sent (JSON escapes kept) and as meant (escapes undone).
        raw = value.decode("utf-8", "replace")
        self._add(raw)
        try:
            self._add(json.loads(f'"{raw}"'))
        except ValueError:
            pass

    def _learn_escaped(self, text: str) -> None:
        self._add(text)
        self._add(unescape(text).decode("utf-8", "replace"))

    def _learn_literals(self, args: str) -> None:
        for m in LITERAL.finditer(args):
            self._learn_escaped(m.group(1))

    def _add(self, value: str) -> None:
        # Short values would blank out ordinary words all over the report.
        if len(value) >= 6 and len(self.values) < _MAX_VALUES:
            self.values.add(value)


def _escape(text: str) -> str:
    """``text`` as strace would print it in a string literal."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif code < 32 or code == 127:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(char)
    return "".join(out)


def payload(name: str, args: str) -> bytes:
    """The bytes a read or write call carried, as far as strace printed them."""
    return payload_cut(name, args)[0]


def payload_cut(name: str, args: str) -> tuple[bytes, bool]:
    """The bytes a read or write call carried, and whether strace cut them (-s)."""
    if name in ("recvmsg", "sendmsg", "readv", "writev"):
        found = list(_IOV.finditer(args))
        data = b"".join(unescape(m.group(1)[1:-1]) for m in found)
        return data, any(args.startswith("...", m.end()) for m in found)
    start = args.find(', "')
    if start < 0:
        return b"", False
    m = LITERAL.match(args, start + 2)
    return (unescape(m.group(1)), m.group(2) is not None) if m else (b"", False)
