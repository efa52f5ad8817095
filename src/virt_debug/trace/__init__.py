"""strace output in, an explanation of how QEMU ended out.

``analyze_paths`` is the entry point: it streams the traces at the given paths through
the reader (``parse``), the tracker (``track``) and the analysis pass (``analysis``);
``report.render`` turns the result into text, JSON, HTML or a Perfetto trace.
"""

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from virt_debug.errors import TraceInputError
from virt_debug.trace.analysis import Analysis, analyze_events

__all__ = ["Analysis", "analyze_paths"]


def analyze_paths(paths: Sequence[Path | str], *, redact: bool = True) -> Analysis:
    """Analyse the strace output at ``paths`` (files or directories) in one pass.

    Raises ``TraceInputError`` when a path is missing or unreadable or holds no trace.
    """
    from virt_debug.trace.parse import iter_events

    if not paths:
        raise TraceInputError(
            "no trace given", "name a strace output file or directory"
        )
    paths = _distinct(paths)
    try:
        result = analyze_events(
            iter_events(list(paths)), sources=[str(p) for p in paths], redact=redact
        )
    except PermissionError as e:
        raise TraceInputError(
            f"{e.filename}: permission denied", "run as a user that can read the trace"
        ) from e
    except IsADirectoryError as e:
        raise TraceInputError(f"{e.filename}: is a directory") from e
    except OSError as e:
        # gzip's errors are OSErrors without a strerror or a file name
        where = e.filename or ", ".join(str(p) for p in paths)
        raise TraceInputError(f"{where}: {e.strerror or e}") from e
    except (EOFError, zlib.error) as e:
        # A .gz trace cut short (still being written, or copied in part); left
        # alone, click would take the EOFError for Ctrl-D and say "interrupted".
        where = ", ".join(str(p) for p in paths)
        raise TraceInputError(
            f"{where}: compressed trace is cut short or damaged ({e})",
            "copy the whole file again, or gunzip what there is",
        ) from e
    if result.events == result.unparsed_count:
        # Nothing but lines it cannot read (a binary file, the wrong file): there is
        # nothing to explain, and a report of garbage would hide that.
        unreadable = f": {result.unparsed_count} unreadable lines" * bool(
            result.unparsed_count
        )
        raise TraceInputError(
            f"no strace records in {', '.join(str(p) for p in paths)}{unreadable}",
            "is this strace output? (strace -f -o FILE ...)",
        )
    return result


def _distinct(paths: Sequence[Path | str]) -> list[Path | str]:
    """``paths`` with a file named twice (``a.strace ./a.strace``) kept once, and a
    directory that cannot be listed reported as such (a walk would skip it)."""
    seen: set[tuple[int, int]] = set()
    kept: list[Path | str] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            kept.append(path)  # the reader says what is wrong with it
            continue
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            raise TraceInputError(
                f"{path}: permission denied", "run as a user that can read the trace"
            )
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            kept.append(path)
    return kept
