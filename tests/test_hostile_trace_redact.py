"""Hostile traces against redaction: every way a secret can sit in strace output.

Each trace below carries a secret the way some strace option or some QEMU or libvirt
behaviour would print it; none of the four reports may show it (in plain text, nor
hex-escaped, nor as a hex dump), and ``--no-redact`` shows it again.
"""

from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import FORMATS, render

SECRET = "TOPSECRETVALUE42"
KEY = "MASTERKEYBYTES0123456789abcdefXY"
SOCK = '8<UNIX-STREAM:[52089->52088,"/tmp/qmp.sock"]>'
QEMU = (
    '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", "-S"], '
    "0x7ffd /* 3 vars */) = 0\n"
)
MESSAGE = (
    '{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0", '
    f'"data": "{SECRET}"}}}}\n'
)
KEY_PATH = "/var/lib/libvirt/qemu/domain-1-vm/master-key.aes"
KEY_QEMU = (
    '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", "-object", '
    f'"secret,id=masterKey0,format=raw,file={KEY_PATH}"], 0x7ffd /* 3 vars */) = 0\n'
)
END = "100 exit_group(1) = ?\n100 +++ exited with 1 +++\n"


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def hex_escape(text: str) -> str:
    return "".join(f"\\x{b:02x}" for b in text.encode())


def recvmsg(pid: int, chunk: str, *, as_hex: bool = False) -> str:
    body = hex_escape(chunk) if as_hex else escape(chunk)
    return (
        f'{pid} recvmsg({SOCK}, {{msg_name=NULL, msg_namelen=0, msg_iov=[{{iov_base="'
        f'{body}", iov_len={len(chunk)}}}], msg_iovlen=1, msg_controllen=0, '
        f"msg_flags=MSG_CMSG_CLOEXEC}}, MSG_CMSG_CLOEXEC) = {len(chunk)}\n"
    )


def bytewise(message: str, *, pids=(100,), as_hex: bool = False) -> str:
    return "".join(
        recvmsg(pids[n % len(pids)], c, as_hex=as_hex) for n, c in enumerate(message)
    )


def split_unfinished(lines: str) -> str:
    out = []
    for line in lines.splitlines(keepends=True):
        pid, _, rest = line.partition(" ")
        cut = rest.index("msg_iov")
        out.append(f"{pid} {rest[:cut]}<unfinished ...>\n")
        out.append(f"{pid} <... recvmsg resumed>{rest[cut:]}")
    return "".join(out)


def dump(data: str) -> str:
    """strace -e read=all: the bytes of a read, 16 a line, in hex and as text."""
    lines = []
    raw = data.encode()
    for offset in range(0, len(raw), 16):
        chunk = raw[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = chunk.decode()
        lines.append(f" | {offset:05x}  {hexes:<48}  {text:<16} |\n")
    return "".join(lines)


CLONE = (
    "100 clone(child_stack=0x7f, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|"
    "CLONE_THREAD|CLONE_SYSVSEM) = 101\n"
)
OPEN_KEY = f'100 openat(AT_FDCWD, "{KEY_PATH}", O_RDONLY) = 3\n'
HEX_ARGV = hex_escape(f"secret,id=sec0,data={SECRET},format=raw")

TRACES = {
    # the monitor: QMP object-add of a secret, in every shape it can take
    "one-byte-per-call": QEMU + bytewise(MESSAGE),
    "threads-known": QEMU + CLONE + bytewise(MESSAGE, pids=(100, 101)),
    # strace -p of a running QEMU attaches to every thread: no clone is seen
    "threads-unknown": QEMU + bytewise(MESSAGE, pids=(100, 101)),
    "unfinished-resumed": QEMU
    + CLONE
    + split_unfinished(bytewise(MESSAGE, pids=(100, 101))),
    "hex-xx": QEMU + bytewise(MESSAGE, as_hex=True),
    "hex-xx-one-call": QEMU + recvmsg(100, MESSAGE, as_hex=True),
    "odd-spacing": QEMU + bytewise(MESSAGE.replace('"data": ', '"data"\t :\n  ')),
    "escaped-quote": QEMU
    + bytewise(MESSAGE.replace(SECRET, SECRET[:4] + '\\"' + SECRET[4:])),
    "unicode-escaped-key": QEMU + bytewise(MESSAGE.replace('"data"', '"d\\u0061ta"')),
    "write": QEMU + f'100 write({SOCK}, "{escape(MESSAGE)}", 99) = 99\n',
    "sendmsg": QEMU
    + f'100 sendmsg({SOCK}, {{msg_name=NULL, msg_namelen=0, msg_iov=[{{iov_base="'
    f'{escape(MESSAGE[:70])}", iov_len=70}}, {{iov_base="{escape(MESSAGE[70:])}", '
    "iov_len=30}], msg_iovlen=2, msg_controllen=0, msg_flags=0}, 0) = 100\n",
    "monitor-read-dump": QEMU
    + f'100 read({SOCK}, "{escape(MESSAGE)}", 4096) = {len(MESSAGE)}\n'
    + dump(MESSAGE),
    # QEMU's command line (strace -v, -xx) and QEMU's option escaping (",,")
    "argv": '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", '
    f'"-object", "secret,id=sec0,data={SECRET},format=raw"], 0x7ffd /* 3 vars */)'
    " = 0\n" + END,
    "argv-json": '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", '
    f'"-object", "{{\\"qom-type\\":\\"secret\\",\\"id\\":\\"s1\\",\\"data\\":\\"'
    f'{SECRET}\\"}}"], 0x7ffd /* 3 vars */) = 0\n' + END,
    "argv-hex-xx": '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64",'
    f' "-object", "{HEX_ARGV}"], 0x7ffd /* 3 vars */) = 0\n'
    '100 openat(AT_FDCWD, "/x", O_RDONLY) = -1 EACCES (Permission denied)\n' + END,
    "argv-double-comma": '100 execve("/usr/bin/qemu-system-x86_64", '
    f'["qemu-system-x86_64", "-object", "secret,id=s,data=abc,,{SECRET},format=raw"]'
    ", 0x7ffd /* 3 vars */) = 0\n" + END,
    # libvirt's master key file, however QEMU reads it
    "key-read": KEY_QEMU + OPEN_KEY + f'100 read(3, "{KEY}", 32) = 32\n' + END,
    "key-pread64": KEY_QEMU + OPEN_KEY + f'100 pread64(3, "{KEY}", 32, 0) = 32\n' + END,
    "key-readv": KEY_QEMU
    + OPEN_KEY
    + f'100 readv(3, [{{iov_base="{KEY[:10]}", iov_len=10}}, {{iov_base="{KEY[10:]}"'
    ", iov_len=22}], 2) = 32\n" + END,
    "key-dup": KEY_QEMU
    + OPEN_KEY
    + f'100 dup(3) = 5\n100 read(5, "{KEY}", 32) = 32\n'
    + END,
    "key-relative-path": KEY_QEMU + f'100 chdir("{KEY_PATH.rsplit("/", 1)[0]}") = 0\n'
    '100 openat(AT_FDCWD, "./master-key.aes", O_RDONLY) = 3\n'
    f'100 read(3, "{KEY}", 32) = 32\n' + END,
    "key-read-dump": KEY_QEMU
    + OPEN_KEY
    + f'100 read(3, "{KEY}", 32) = 32\n'
    + dump(KEY)
    + END,
    "key-unfinished": KEY_QEMU
    + OPEN_KEY
    + "100 read(3,  <unfinished ...>\n"
    + CLONE
    + f'100 <... read resumed>"{KEY}", 32) = 32\n'
    + END,
    # A read cut short (the trace ends mid-line): the reader cannot read the line,
    # and the file it reads is one only QEMU's command line names.
    "key-cut-line": '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", '
    '"-object", "secret,id=sec0,format=raw,file=/run/keys/disk.txt"], 0x7ffd '
    "/* 3 vars */) = 0\n"
    '100 openat(AT_FDCWD, "/run/keys/disk.txt", O_RDONLY) = 3</run/keys/disk.txt>\n'
    f'100 read(3</run/keys/disk.txt>, "{KEY}", 32',
    "key-cut-line-no-y": KEY_QEMU + OPEN_KEY + f'100 read(3, "{KEY}", 32',
}
# Pieces of a secret that must not show, as text, hex escapes or a hex dump.
LEAKS = (
    SECRET, SECRET[:8], SECRET[-8:], SECRET[::2], SECRET[1::2],
    hex_escape(SECRET[:6]), "54 4f 50 53 45 43",
    KEY[:12], KEY[-12:], "4d 41 53 54 45 52",
)  # fmt: skip


def trace(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.strace"
    path.write_text(TRACES[name])
    return path


@pytest.mark.parametrize("name", sorted(TRACES))
def test_no_format_shows_the_secret(tmp_path, name):
    analysis = analyze_paths([trace(tmp_path, name)])

    for fmt in FORMATS:
        out = render(analysis, fmt, verbose=True)
        shown = [leak for leak in LEAKS if leak in out.replace("\\\\", "\\")]
        assert shown == [], f"{fmt} shows {shown}"


@pytest.mark.parametrize(
    "name", ["argv-hex-xx", "argv-double-comma", "key-relative-path", "key-read-dump"]
)
def test_no_redact_shows_it(tmp_path, name):
    analysis = analyze_paths([trace(tmp_path, name)], redact=False)

    out = render(analysis, "json") + render(analysis, "text", verbose=True)

    assert any(leak in out for leak in LEAKS)


def test_the_monitor_message_around_a_hidden_secret_stays_readable(tmp_path):
    analysis = analyze_paths([trace(tmp_path, "threads-unknown")])

    texts = [m.text for m in analysis.monitor]

    assert any('"object-add"' in text and "<redacted>" in text for text in texts)
