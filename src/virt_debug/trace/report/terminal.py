"""Text the terminal report may show: controls from the trace escaped, long strings
cut, paths shortened in the middle rather than split."""

import copy
import dataclasses

from virt_debug.trace.analysis import Analysis

MAX_SHOWN = 2000  # characters of one path, message or argument shown at most

# What a terminal would act on rather than show: C0 controls but the newline, DEL,
# C1 controls (U+009B is a CSI of its own), line separators, bidirectional overrides,
# and lone surrogates (file-name bytes that are not UTF-8). They are shown escaped.
_UNSAFE = {
    **{code: f"\\x{code:02x}" for code in [*range(32), *range(0x7F, 0xA0)]},
    **{code: f"\\u{code:04x}" for code in [0x2028, 0x2029, 0x200E, 0x200F]},
    **{code: f"\\u{code:04x}" for code in [*range(0x202A, 0x202F)]},
    **{code: f"\\u{code:04x}" for code in [*range(0x2066, 0x206A)]},
    **{code: f"\\x{code - 0xDC00:02x}" for code in range(0xDC80, 0xDD00)},
    **{code: f"\\u{code:04x}" for code in range(0xD800, 0xDC80)},
    **{code: f"\\u{code:04x}" for code in range(0xDD00, 0xE000)},
}
_LINES = {**_UNSAFE, 10: "\n", 9: "    "}


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` as the terminal may show it: controls escaped, cut past
    ``MAX_SHOWN``; ``lines`` keeps newlines (CRLF as one)."""
    if len(text) > MAX_SHOWN:
        text = text[:MAX_SHOWN] + " [...]"
    if lines:
        return text.replace("\r\n", "\n").translate(_LINES)
    return text.translate(_UNSAFE)


def fit(path: str, room: int) -> str:
    """``path`` whole if it fits in ``room`` columns, else with its middle left out
    (``/tmp/newuser/…/guest/disk.img``): the start and the file name say most."""
    if len(path) <= room or room < 12:
        return path
    # A third for the start, the rest for the end; each cut at a slash where one
    # is near, so that what is left reads as whole directories.
    head = (room - 1) // 3
    slash = path.rfind("/", 1, head)
    if slash > 0:
        head = slash + 1
    tail = room - 1 - head
    cut = path.find("/", len(path) - tail)
    if 0 < cut < len(path) - tail // 2:
        tail = len(path) - cut
    return path[:head] + "…" + path[len(path) - tail :]


def shown(analysis: Analysis) -> Analysis:
    """A copy of ``analysis`` whose every string is ``printable``: the trace decides
    what they hold, and the terminal must not take any of it as a command."""
    clean = _printable_copy(analysis, skip=("timeline",))
    clean.qemu_stderr = printable(analysis.qemu_stderr[-MAX_SHOWN:], lines=True)
    return clean


def _printable_copy(value, skip=()):
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_printable_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_printable_copy(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clean = copy.copy(value)
        for f in dataclasses.fields(value):
            if f.name not in skip:
                setattr(clean, f.name, _printable_copy(getattr(value, f.name)))
        return clean
    return value
