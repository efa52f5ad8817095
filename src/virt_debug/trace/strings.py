"""strace's quoted strings: find them, undo their escapes, read argv arrays.

strace prints data as C-like string literals: ``"a\\n\\x00\\"b"``, followed by ``...``
when ``-s`` cut it short. Analysis needs the bytes back (QEMU's error message, the
monitor byte stream) and redaction needs to find and replace the literals.
"""

import re

REDACTED = "<redacted>"

# A literal with its escapes, and the "..." strace appends when it truncated it.
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?', re.S)

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
_HEX = frozenset("0123456789abcdefABCDEF")


_DEVICE = re.compile(r"<(?:char|block) \d+:\d+>$")


def plain_path(path: str) -> str:
    """A -yy decorated device path without its ``<char M:N>`` suffix."""
    return _DEVICE.sub("", path) if path.endswith(">") else path


def unescape(text: str) -> bytes:
    """The bytes a literal's inside stands for (``\\n``, ``\\x7f``, ``\\177`` ...)."""
    if "\\" not in text:
        return text.encode("utf-8", "surrogateescape")

    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 >= n:
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x" and i + 2 < n and text[i + 2] in _HEX:
            # \xHH: strace prints two digits, tolerate one
            width = 2 if i + 3 < n and text[i + 3] in _HEX else 1
            out.append(int(text[i + 2 : i + 2 + width], 16))
            i += 2 + width
        elif nxt in _OCTAL:
            j = i + 1
            while j < n and j < i + 4 and text[j] in _OCTAL:
                j += 1
            out.append(int(text[i + 1 : j], 8) & 0xFF)
            i = j
        else:
            code = _SIMPLE.get(nxt)
            if code is None:
                out += nxt.encode("utf-8", "surrogateescape")
            else:
                out.append(code)
            i += 2
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
