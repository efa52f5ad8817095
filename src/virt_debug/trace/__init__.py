"""strace output in, an explanation of how QEMU ended out.

``analyze_paths`` is the entry point: it streams the traces at the given paths through
the reader (``parse``), the tracker (``track``) and the analysis pass (``analysis``);
``report.render`` turns the result into text, JSON, HTML or a Perfetto trace.
"""

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
        raise TraceInputError(f"{e.filename or paths[0]}: {e.strerror}") from e
    if result.events == 0:
        raise TraceInputError(
            f"no strace records in {', '.join(str(p) for p in paths)}",
            "is this strace output? (strace -f -o FILE ...)",
        )
    return result
