"""strace output in, an explanation of how QEMU ended out.

``analyze_paths`` is the entry point: it streams the traces at the given paths through
the reader (``parse``), the tracker (``track``) and the analysis pass (``analysis``);
``report.render`` turns the result into text, JSON, HTML or a Perfetto trace.
"""

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from virt_debug.errors import TraceInputError
from virt_debug.trace.analysis import Analysis, analyze_events

__all__ = ["Analysis", "Launch", "analyze_launches", "analyze_paths", "find_launches"]

# How deep below a path given a launch directory is looked for: DOMAIN-TIME/TIME-PID/
# under an output folder is two levels.
_LAUNCH_DEPTH = 3


@dataclass
class Launch:
    """One launch's analysis, and where it was found among the paths given."""

    label: str  # the launch directory relative to the path given ("." when it is it)
    base: str  # the path given it was found under: evidence is named relative to it
    analysis: Analysis


def find_launches(paths: Sequence[Path | str]) -> list[Path]:
    """The launch directories of the emulator wrapper (``strace.log`` beside
    ``status`` or ``argv``) at or below ``paths``, in order, each once."""
    found: list[Path] = []
    for path in paths:
        found += _launches_below(Path(path), _LAUNCH_DEPTH)
    return list(dict.fromkeys(found))


def _is_launch(path: Path) -> bool:
    return (path / "strace.log").is_file() and any(
        (path / name).is_file() for name in ("status", "argv")
    )


def _launches_below(path: Path, depth: int) -> list[Path]:
    try:
        if not path.is_dir():
            return []
        if _is_launch(path):
            return [path]
        if depth == 0:
            return []
        children = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []  # the reader says what is wrong with it
    return [found for child in children for found in _launches_below(child, depth - 1)]


def analyze_launches(
    paths: Sequence[Path | str], *, redact: bool = True
) -> list[Launch]:
    """Analyse ``paths``; when they hold more than one launch directory, each one
    on its own (a launch's failure must not mix with another's, healthy, run), in
    the order found (launch directories are named by time). Paths given that are
    not in any launch directory are analysed together, last."""
    if not paths:
        return [Launch(".", "", analyze_paths(paths, redact=redact))]
    launches = find_launches(paths)
    if len(launches) < 2:
        return [Launch(".", "", analyze_paths(paths, redact=redact))]

    out: list[Launch] = []
    rest: list[Path | str] = []
    done: set[Path] = set()
    for given in _distinct(paths):
        below = [d for d in launches if _under(d, Path(given))]
        if not below:
            rest.append(given)
        for directory in below:
            if directory in done:
                continue  # named twice (a folder and a launch in it)
            done.add(directory)
            base = Path(given) if Path(given).is_dir() else Path(given).parent
            label = os.path.relpath(directory, base)
            out.append(
                Launch(label, str(base), analyze_paths([directory], redact=redact))
            )
    if rest:
        out.append(Launch("other traces", "", analyze_paths(rest, redact=redact)))
    return out


def _under(directory: Path, given: Path) -> bool:
    try:
        return (
            directory == given
            or directory.is_relative_to(given)
            or (given.parent == directory and given.is_file())
        )
    except (OSError, ValueError):
        return False


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
