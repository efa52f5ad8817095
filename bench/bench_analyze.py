"""Benchmark: our trace analysis against other strace readers, on a real QEMU trace.

    .venv/bin/python bench/bench_analyze.py [--trace FILE] [--size-mb 300]

Without ``--trace`` it makes one: QEMU (KVM, q35, 64 MiB, no devices) runs under
``strace -f -tt -T -yy`` while a QMP client sends it commands for ``--seconds``; the
trace is then repeated up to ``--size-mb``. Each contender runs in its own child
process, which reports its CPU time, its wall time and its own peak RSS; rates and
ratios use CPU time, steadier than wall time on a shared machine:

* ours: ``virt_debug.trace.analyze_paths`` (the full analysis) when it exists, and
  the reader + tracker pass alone;
* strace-process-tree (PyPI) building its process tree;
* strace-parser (PyPI) parsing every line, on a slice (it is slow); it only reads
  ``TIMESTAMP SYSCALL`` lines, so the pid column is dropped and the time of day
  turned into seconds before it sees a line, and the lines it rejects are counted;
* ``wc -l``, the floor.
"""

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QEMU = "qemu-system-x86_64"
QMP_COMMANDS = [
    {"execute": "query-status"},
    {"execute": "query-cpus-fast"},
    {"execute": "query-block"},
    {"execute": "query-memdev"},
    {"execute": "qom-list", "arguments": {"path": "/machine"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "info mtree"}},
]


def make_qemu_trace(dest: Path, seconds: float) -> None:
    """Trace a real QEMU driven over QMP for ``seconds``."""
    sock = Path(tempfile.mkdtemp()) / "qmp.sock"
    argv = [
        "strace", "-f", "-tt", "-T", "-yy", "-o", str(dest),
        QEMU, "-accel", "kvm", "-M", "q35", "-m", "64", "-display", "none",
        "-nodefaults", "-serial", "null", "-qmp", f"unix:{sock},server=on,wait=off",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        client = _connect(sock, proc)
        stream = client.makefile("rwb")
        stream.readline()  # greeting
        _qmp(stream, {"execute": "qmp_capabilities"})
        end = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < end:
            _qmp(stream, QMP_COMMANDS[sent % len(QMP_COMMANDS)])
            sent += 1
        _qmp(stream, {"execute": "quit"})
        print(f"made {dest}: {sent} QMP commands in {seconds:.0f} s", file=sys.stderr)
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connect(path: Path, proc: subprocess.Popen) -> socket.socket:
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"QEMU under strace exited early with {proc.returncode}")
        try:
            client = socket.socket(socket.AF_UNIX)
            client.connect(str(path))
            return client
        except OSError:
            time.sleep(0.05)
    sys.exit("QEMU's QMP socket never appeared")


def _qmp(stream, command: dict) -> None:
    stream.write(json.dumps(command).encode() + b"\n")
    stream.flush()
    while True:
        reply = json.loads(stream.readline() or b"{}")
        if "event" not in reply:
            return


def grow(src: Path, dest: Path, size_mb: int) -> None:
    """``dest`` is ``src`` repeated until it holds at least ``size_mb`` MiB."""
    with open(dest, "wb") as out:
        while out.tell() < size_mb * 2**20:
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, 2**22)


# -- contenders: each runs in a child process (`--run NAME FILE`) --------------------


def run_ours_full(path: str, limit: int) -> dict:
    from virt_debug.trace import analyze_paths

    analysis = analyze_paths([path])
    return {"unparsed": len(getattr(analysis, "unparsed", []) or [])}


def run_ours_read(path: str, limit: int) -> dict:
    from virt_debug.trace.model import Unparsed
    from virt_debug.trace.parse import iter_events
    from virt_debug.trace.track import Tracker

    feed = Tracker().feed
    unparsed = 0
    for event in iter_events([path]):
        feed(event)
        if type(event) is Unparsed:
            unparsed += 1
    return {"unparsed": unparsed}


def run_process_tree(path: str, limit: int) -> dict:
    import strace_process_tree as spt

    with open(path) as f:
        tree = spt.parse_stream(spt.events(f))
    return {"processes": len(tree.children)}


def run_strace_parser(path: str, limit: int) -> dict:
    from strace_parser.parser import get_parser

    parser = get_parser()
    rejected = 0
    lines = 0
    with open(path, errors="replace") as f:
        for line in f:
            if lines >= limit:
                break
            lines += 1
            try:
                parser.parse(_for_strace_parser(line))
            except Exception:
                rejected += 1
    return {"lines": lines, "rejected": rejected}


def _for_strace_parser(line: str) -> str:
    _pid, _, rest = line.partition(" ")
    stamp, _, body = rest.lstrip(" ").partition(" ")
    if stamp[2:3] == ":":
        h, m, s = stamp.split(":")
        stamp = (
            f"{int(h) * 3600 + int(m) * 60 + int(s.split('.')[0])}.{s.split('.')[1]}"
        )
    return f"{stamp} {body}"


def run_wc(path: str, limit: int) -> dict:
    out = subprocess.run(["wc", "-l", path], capture_output=True, text=True, check=True)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "lines": int(out.stdout.split()[0]),
        "maxrss_kb": child.ru_maxrss,
        "cpu": child.ru_utime + child.ru_stime,
    }


CONTENDERS = {
    "ours: full analysis": run_ours_full,
    "ours: read + track": run_ours_read,
    "strace-process-tree": run_process_tree,
    "strace-parser": run_strace_parser,
    "wc -l": run_wc,
}


def child_main(name: str, path: str, limit: int) -> None:
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = CONTENDERS[name](path, limit)
    result["seconds"] = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result.setdefault("cpu", used)
    result.setdefault("maxrss_kb", after.ru_maxrss)
    print(json.dumps(result))


def measure(name: str, path: Path, limit: int) -> dict | None:
    argv = [sys.executable, __file__, "--run", name, str(path), "--limit", str(limit)]
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"{name}: {reason}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", type=Path, help="an existing strace -f output file")
    ap.add_argument("--seconds", type=float, default=20, help="QMP traffic to trace")
    ap.add_argument("--size-mb", type=int, default=0, help="repeat the trace to this")
    ap.add_argument(
        "--parser-lines", type=int, default=20000, help="strace-parser slice"
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument(
        "--only", action="append", choices=list(CONTENDERS), help="run just these"
    )
    ap.add_argument("--run", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        child_main(args.run[0], args.run[1], args.limit)
        return

    trace = args.trace
    if trace is None:
        trace = args.workdir / "qemu-bench.strace"
        if not trace.exists():
            make_qemu_trace(trace, args.seconds)
    if args.size_mb:
        big = args.workdir / f"qemu-bench-{args.size_mb}mb.strace"
        if not big.exists():
            grow(trace, big, args.size_mb)
        trace = big

    size_mb = trace.stat().st_size / 2**20
    lines = int(subprocess.run(["wc", "-l", str(trace)], capture_output=True,
                               text=True).stdout.split()[0])  # fmt: skip
    print(f"trace: {trace} ({size_mb:.0f} MiB, {lines:,} lines)\n")
    rows = []
    for name in args.only or CONTENDERS:
        result = measure(name, trace, args.parser_lines)
        if result is not None:
            rows.append((name, result.get("lines", lines), result))
    print_table(rows)


def print_table(rows: list) -> None:
    """Lines per second of CPU time (the machine may be shared), and of wall time."""
    tree = next((r for r in rows if r[0] == "strace-process-tree"), None)
    base = tree[1] / max(tree[2]["cpu"], 1e-9) if tree else None
    print(
        f"{'contender':21} {'lines':>11} {'cpu s':>7} {'wall s':>7} {'lines/cpu s':>12}"
        f" {'peak MiB':>8} {'vs tree':>7}  notes"
    )
    for name, n, result in rows:
        rate = n / max(result["cpu"], 1e-9)
        ratio = f"{rate / base:.2f}x" if base else "-"
        note = ""
        if "rejected" in result:
            note = f"rejected {100 * result['rejected'] / max(n, 1):.1f}% (slice)"
        elif "unparsed" in result:
            note = f"unparsed {result['unparsed']}"
        print(
            f"{name:21} {n:>11,} {result['cpu']:>7.2f} {result['seconds']:>7.2f}"
            f" {rate:>12,.0f} {result['maxrss_kb'] / 1024:>8.0f} {ratio:>7}  {note}"
        )


if __name__ == "__main__":
    main()
