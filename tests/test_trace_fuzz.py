"""The reader never crashes and accounts for every line, whatever it is fed.

Two sources of bad input: a deterministic mutator over the real corpus (byte flips,
cuts, splices, stray attach notes, colour codes, CR, invalid UTF-8) writing well over
100,000 lines to files, and hypothesis building lines from strace's own pieces.
"""

import dataclasses
import random
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virt_debug.trace.lines import FileReader
from virt_debug.trace.model import Syscall, Unparsed
from virt_debug.trace.parse import ReadStats, iter_events
from virt_debug.trace.track import Tracker

CORPUS = Path(__file__).parent / "data" / "traces" / "formats"
FILES = 28
LINES_PER_FILE = 5000
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_JUNK = [
    b"strace: Process 4242 attached",
    b"strace: Process 17 detached\n",
    b"<unfinished ...>",
    b"<... read resumed>",
    b"<...write resumed>",
    b" = ",
    b") = -1 ENOENT (No such file or directory)",
    b"\x1b[31m",
    b"\r",
    b"\xff\xfe",
    b"\xc3",
    b"\x00",
    b'"',
    b"\\",
    b"<",
    b">",
    b"[pid  12] ",
    b"+++ exited with 1 +++",
    b"--- SIGSEGV {si_signo=SIGSEGV} ---",
    b" > /lib/libc.so.6(read+0x12) [0x1]\n",
    b"<0.000012>",
    b"(INJECTED)",
    b"99999999999999999999",
    b"23:59:59.999999 ",
]


def corpus_lines() -> list[bytes]:
    lines = []
    for path in sorted(CORPUS.rglob("*.strace")) + sorted(CORPUS.glob("ff_*/*")):
        lines.extend(path.read_bytes().splitlines(keepends=True))
    return lines


def mutate(line: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    kind = rng.randrange(9)
    if kind == 0 or not line:
        return line
    if kind == 1:  # flip bytes
        data = bytearray(line)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:  # cut short
        return line[: rng.randrange(len(line))] + b"\n"
    if kind == 3:  # splice with another line
        other = rng.choice(pool)
        return (
            line[: rng.randrange(len(line))] + other[rng.randrange(len(other) or 1) :]
        )
    if kind in (4, 5):  # insert a piece of strace syntax or junk bytes
        at = rng.randrange(len(line))
        return line[:at] + rng.choice(_JUNK) + line[at:]
    if kind == 6:  # drop a few bytes
        at = rng.randrange(len(line))
        return line[:at] + line[at + rng.randint(1, 8) :]
    if kind == 7:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 80))) + b"\n"
    return line.replace(b"\n", b"\r\n")


def expected_counts(data: bytes) -> tuple[int, int]:
    """(lines, blank lines) counted here, independently of the reader."""
    if not data:
        return 0, 0
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    blank = sum(not _ANSI.sub(b"", line).strip(b" \t\r") for line in lines)
    return len(lines), blank


def check(path: Path, data: bytes) -> int:
    stats = ReadStats()
    tracker = Tracker()
    events = [tracker.feed(e) for e in iter_events([path], stats=stats)]

    lines, blank = expected_counts(data)
    assert stats.lines == lines
    assert stats.blank == blank
    assert lines == stats.blank + stats.records + stats.joined + stats.frames + (
        stats.unparsed
    )
    assert stats.unparsed == sum(isinstance(e, Unparsed) for e in events)
    assert all(1 <= e.line_no <= lines for e in events)
    unparsed_lines = [e.line_no for e in events if isinstance(e, Unparsed)]
    assert len(unparsed_lines) == len(set(unparsed_lines))
    return lines


def test_mutated_corpus_never_crashes_and_every_line_counts(tmp_path: Path) -> None:
    rng = random.Random(20261203)
    pool = corpus_lines()
    total = 0

    for n in range(FILES):
        start = rng.randrange(len(pool))
        chosen = [pool[(start + i) % len(pool)] for i in range(LINES_PER_FILE)]
        data = b"".join(mutate(line, rng, pool) for line in chosen)
        if n % 3 == 0:
            data = data[: rng.randrange(len(data))]  # a file cut anywhere
        path = tmp_path / f"trace.{n + 1}"
        path.write_bytes(data)
        total += check(path, data)

    assert total >= 100_000


def test_mutated_ff_set_merges_without_crashing(tmp_path: Path) -> None:
    rng = random.Random(7)
    pool = corpus_lines()
    for pid in (101, 102, 103):
        data = b"".join(mutate(rng.choice(pool), rng, pool) for _ in range(2000))
        (tmp_path / f"qemu.{pid}").write_bytes(data)

    events = list(iter_events([tmp_path]))

    assert len({e.source for e in events}) == 3


PIECES = st.sampled_from(
    [
        "1234 ",
        "[pid  77] ",
        "[pid 77<qemu>] ",
        "12:00:00.000001 ",
        "1700000000.123 ",
        "     0.000100 ",
        "[  257] ",
        "[00007f0e9f1c6ad7] ",
        "openat(",
        "read(",
        "clone3(",
        "execve(",
        "syscall_0x1b6(",
        "AT_FDCWD",
        '"/dev/kvm"',
        '"a\\"b"',
        "3</dev/kvm>",
        "5<TCP:[1.2.3.4:5->6.7.8.9:10]>",
        "(deleted)",
        ", ",
        ")",
        " = ",
        "0",
        "-1 ENOENT (No such file or directory)",
        "? ERESTARTSYS (To be restarted if SA_RESTART is set)",
        "? <unavailable>",
        " <0.000012>",
        " <unfinished ...>",
        "<... read resumed>",
        "<...clone3 resumed>",
        "--- SIGCHLD {si_signo=SIGCHLD} ---",
        "+++ exited with 0 +++",
        "+++ killed by SIGKILL (core dumped) +++",
        "+++ superseded by execve in pid 12 +++",
        "strace: Process 12 attached",
        "[ Process PID=1 runs in 32 bit mode. ]",
        " > /lib/libc.so.6(read+0x1) [0x2]",
        "/* 1 var */",
        '"..."...',
        "\x1b[1m",
        "\r",
        "\\xff",
        "{",
        "²",
        "٣",
        "[",
        "<",
        ">",
    ]
)
LINES = st.lists(st.lists(PIECES, max_size=8).map("".join), max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
def test_lines_built_from_strace_pieces(lines: list[str]) -> None:
    reader = FileReader("generated", 0, lambda tod: 0.0)
    tracker = Tracker()

    events = [tracker.feed(e) for e in reader.events(line + "\n" for line in lines)]

    stats = reader.stats
    assert stats.lines == len(lines)
    assert stats.lines == (
        stats.blank + stats.records + stats.joined + stats.frames + stats.unparsed
    )
    assert all(
        isinstance(e, Syscall | Unparsed) or e.line_no <= len(lines) for e in events
    )


class CarefulReader(FileReader):
    fast = False


def _both_ways(lines: list[str]) -> tuple[list, list]:
    """Events both ways, as dicts; times to the microsecond (the float sums differ)."""
    out = []
    for reader in (FileReader, CarefulReader):
        events = []
        for event in reader("x", 0, lambda tod: 0.0).events(lines):
            fields = dataclasses.asdict(event) | {"type": type(event).__name__}
            if fields.get("time") is not None:
                fields["time"] = round(fields["time"], 6)
            events.append(fields)
        out.append(events)
    return out[0], out[1]


def test_fast_path_reads_the_corpus_as_the_careful_path_does() -> None:
    for path in sorted(CORPUS.rglob("*.strace")) + sorted(CORPUS.glob("ff_*/*")):
        lines = path.read_text(errors="backslashreplace").splitlines(keepends=True)

        quick, careful = _both_ways(lines)

        assert quick == careful, path.name


def test_fast_path_agrees_on_mutated_lines() -> None:
    rng = random.Random(99)
    pool = corpus_lines()
    data = b"".join(mutate(rng.choice(pool), rng, pool) for _ in range(20000))
    lines = data.decode(errors="backslashreplace").splitlines(keepends=True)

    quick, careful = _both_ways(lines)

    assert len(quick) == len(careful)
    for a, b in zip(quick, careful, strict=True):
        assert a == b
