"""strace's quoted strings: find them, undo their escapes, read argv arrays.

strace prints data as C-like string literals: ``"a\\n\\x00\\"b"``, followed by ``...``
when ``-s`` cut it short. Analysis needs the bytes back (QEMU's error message, the
monitor byte stream) and redaction needs to find and replace the literals.
"""

import re

REDACTED = "<redacted>"

# A literal with its escapes, and the "..." strace appends when it truncated it.
# Possessive: the regex engine keeps no backtracking state per character, which
# on one string of ten megabytes took gigabytes.
LITERAL = re.compile(r'"((?:[^"\\]++|\\.)*+)"(\.\.\.)?', re.S)

_SIMPLE = {
    "n": 10,
    "t": 9,
    "r": 13,
    "v": 11,
    "f": 12,
    "a": 7,
    "b": 8,
    "e": 27,
    "\\": 92,
    '"': 34,
    "'": 39,
    "?": 63,
}
_OCTAL = frozenset("01234567")


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.S)


def unescape(text: str) -> bytes:
    """The bytes a literal's inside stands for (``\\n``, ``\\x7f``, ``\\177`` ...)."""
    if "\\" not in text:
        return text.encode("utf-8", "surrogateescape")

    # split() with a group alternates plain text and escape bodies.
    parts = _ESCAPE.split(text)
    out = bytearray()
    for n, part in enumerate(parts):
        if n % 2 == 0:
            if part:
                out += part.encode("utf-8", "surrogateescape")
        elif part[0] == "x" and len(part) > 1:
            out.append(int(part[1:], 16))
        elif part[0] in _OCTAL:
            out.append(int(part, 8) & 0xFF)
        else:
            code = _SIMPLE.get(part)
            if code is not None:
                out.append(code)
            else:
                out += part.encode("utf-8", "surrogateescape")
    return bytes(out)


def literals(text: str) -> list[tuple[str, bool]]:
    """Every string literal of ``text``: (inside, escapes kept; truncated by -s)."""
    return [(m.group(1), m.group(2) is not None) for m in LITERAL.finditer(text)]


def first_literal(text: str) -> tuple[str, bool] | None:
    m = LITERAL.search(text)
    return (m.group(1), m.group(2) is not None) if m else None


def str_array(args: str) -> list[str]:
    """The strings of the first ``[...]`` array in ``args`` (execve's argv), decoded."""
    start = args.find("[")
    if start < 0:
        return []
    out = []
    pos = start + 1
    while True:
        m = LITERAL.match(args, pos)
        if m is None:
            break
        out.append(unescape(m.group(1)).decode("utf-8", "replace"))
        pos = m.end()
        if args.startswith(", ", pos):
            pos += 2
        else:
            break
    return out


def redact_literals(text: str) -> str:
    """``text`` with every string literal replaced by ``<redacted>``."""
    return LITERAL.sub(REDACTED, text)


def human_bytes(size: int) -> str:
    """``size`` in binary units as people write them: ``64 TiB``, ``1.5 GiB``."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            text = f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        value /= 1024
    return f"{size} bytes"  # not reached
