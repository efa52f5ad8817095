"""Move directories in and out of a pod as a tar stream over exec.

The pod side is a command for a helper pod (`upload_command`, `fetch_command`):
``python3 -c SOURCE ...`` where SOURCE is `virt_debug.launch.tarpipe` with its
comments and docstrings left out, so it needs nothing but python3 (3.9 or newer)
in the image. The local side (`pack_directory`, `unpack_stream`) runs the same code,
so both ends refuse the same hostile archives.

Over a Kubernetes exec stream: feed `pack_directory` chunks to the upload command's
stdin and close it; feed the fetch command's stdout chunks to `unpack_stream`. The
helper's last stderr line is its summary; `parse_summary` reads it.
"""

import ast
import base64
import functools
import inspect
import logging
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from virt_debug.errors import TraceInputError, UsageError
from virt_debug.launch import tarpipe

log = logging.getLogger(__name__)

MAX_BYTES = tarpipe.MAX_BYTES
_SUMMARY = re.compile(r"virt-debug-transfer: ok files=(\d+) bytes=(\d+)")
_REFUSAL = re.compile(r"virt-debug-transfer: refused: (.*)")


@dataclass(frozen=True)
class TransferSummary:
    files: int
    bytes: int


def upload_command(
    dest_dir: str, *, python: str = "python3", max_bytes: int = MAX_BYTES
) -> list[str]:
    """The helper pod's command that unpacks a tar(.gz) on stdin into ``dest_dir``.

    Top-level entries of the archive replace those of ``dest_dir``; a refused or
    broken archive changes nothing. Exit status 0 means every member landed.
    """
    args = [dest_dir, "--max-bytes", str(max_bytes)]
    return [python, "-c", _compact(helper_source("unpack_main")), *args]


def fetch_command(
    src_dir: str, since: str | None = None, *, python: str = "python3"
) -> list[str]:
    """The helper pod's command that writes ``src_dir`` as tar.gz on stdout.

    ``since``: a launch directory name (``YYYYmmdd-HHMMSS-PID[-N]``); only launches
    after it are sent, plus the files beside them such as ``probes.log``.
    """
    args = [src_dir, *(["--since", since] if since else [])]
    return [python, "-c", _compact(helper_source("pack_main")), *args]


def pack_directory(
    src: Path,
    *,
    since: str | None = None,
    extra: Mapping[str, tuple[bytes, int]] | None = None,
) -> Iterator[bytes]:
    """Stream ``src`` as tar.gz chunks; ``extra`` adds files: name -> (data, mode)."""
    src = Path(src)
    if not src.is_dir():
        raise UsageError(f"{src} is not a directory; nothing to send")
    for name in extra or {}:
        try:
            tarpipe.safe_parts(name)
        except tarpipe.Refused as e:
            raise UsageError(f"cannot add {name!r} to the archive: {e}") from e
    return _pack(src, since, extra)


def _pack(src: Path, since: str | None, extra) -> Iterator[bytes]:
    notes: list[str] = []
    yield from tarpipe.iter_pack(str(src), since, extra, notes=notes)
    for note in notes:
        log.debug("packing %s: %s", src, note)


def unpack_stream(
    chunks: Iterable[bytes], dest: Path, *, max_bytes: int = MAX_BYTES
) -> TransferSummary:
    """Unpack a tar(.gz) stream into ``dest`` under the helper's rules.

    Raises TraceInputError, with nothing written, if the archive is refused
    (names outside ``dest``, links that leave it, devices, over ``max_bytes``)
    or ends early.
    """
    try:
        # No completion marker here: the directory is the user's, for the analysis.
        reader = tarpipe.ChunkReader(chunks)
        files, size = tarpipe.unpack(
            reader, str(dest), max_bytes, marker=False, replace=False
        )
    except tarpipe.Refused as e:
        raise TraceInputError(
            f"the archive for {dest} was refused: {e}; nothing was written",
            hint="fetch again; if it repeats, look at the pod's output directory",
        ) from e
    except OSError as e:
        raise TraceInputError(
            f"cannot unpack into {dest}: {e}; nothing was written",
            hint="choose an --output directory you can write, with free space",
        ) from e
    log.info("unpacked %d files, %d bytes into %s", files, size, dest)
    return TransferSummary(files, size)


def check_destination(dest: Path) -> None:
    """Raise UsageError unless ``unpack_stream`` can write into ``dest``.

    Asked before a run changes anything: its traces should not be lost to a typo
    in ``--output`` once the VM has been restarted for them.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--output {dest} exists and is not a directory")
    ancestor = dest
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(f"{ancestor} is not a directory")
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise UsageError(
            f"cannot write the traces into {dest}: {e}",
            hint="choose an --output directory you can write",
        ) from e


def parse_summary(stderr: str) -> TransferSummary | None:
    """The helper's summary from its stderr, or None if it did not finish."""
    found = _SUMMARY.findall(stderr)
    if not found:
        return None
    files, size = found[-1]
    return TransferSummary(int(files), int(size))


def refusal(stderr: str) -> str | None:
    """The helper's one-line reason when it refused an archive, if it did."""
    match = _REFUSAL.search(stderr)
    return match.group(1).strip() if match else None


def _compact(source: str) -> str:
    """The helper as a one-liner that inflates itself.

    Exec arguments travel in the request URL, and proxies in front of an API
    server may cap a URL at 8 KiB: compressed, the helper takes about a third.
    """
    packed = base64.b64encode(zlib.compress(source.encode(), 9)).decode()
    return f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"


@functools.cache
def helper_source(entry: str) -> str:
    """tarpipe's source for one direction, with no docstrings or comments.

    Only what ``entry`` (``unpack_main`` or ``pack_main``) reaches is kept, so the
    command stays short: exec arguments travel in the request URL.
    """
    tree = ast.parse(inspect.getsource(tarpipe))
    definitions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }

    # Follow the names each kept definition uses, from the entry point down.
    wanted: set[str] = set()
    queue = [entry]
    while queue:
        name = queue.pop()
        if name in wanted or name not in definitions:
            continue
        wanted.add(name)
        queue += [n.id for n in ast.walk(definitions[name]) if isinstance(n, ast.Name)]

    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            if node.name in wanted:
                _drop_docstrings(node)
                body.append(node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            body.append(node)
        elif isinstance(node, ast.Assign) and isinstance(
            node.value, ast.Constant | ast.BinOp | ast.Call
        ):
            body.append(node)
    call = f"sys.exit({entry}(sys.argv[1:]))"
    return ast.unparse(ast.Module(body=body, type_ignores=[])) + "\n" + call + "\n"


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)
            if not body:
                body.append(ast.Pass())
