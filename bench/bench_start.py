"""Start-time benchmark: the demo guest untraced, traced (default mode) and --full.

Each round starts the demo guest three ways, one after another (alternating, so a
machine that slows down over time hurts all three alike):

* untraced: define the plain domain, ``create()``, wait for the serial line;
* traced: ``virt-debug run strace`` through the local backend (hook, wrapper, strace
  with the default seccomp filter), until the serial line;
* full: the same with ``--full``.

For each it records the define (the hook twice, and in the first round libvirt's probe
of the wrapper, a new emulator path; later rounds reuse libvirt's cached result, as
later runs of a user do), the start (``create()`` returns once the guest's CPUs run)
and the time from the start call to the guest's serial line. It prints the medians and
the ratios to untraced in one table. Run as root it starts a private session daemon
as uid 107, as the tests do; otherwise as the current user.

    .venv/bin/python bench/bench_start.py            # 5 rounds
    .venv/bin/python bench/bench_start.py -n 3 --accel tcg --keep bench/out
    .venv/bin/python bench/bench_start.py --no-full --leave-out recvmsg,ppoll,read,write
    .venv/bin/python bench/bench_start.py --no-full --strace-options '-f -tt -T -y'
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import libvirt

from virt_debug.backends.libvirt import domain as domains
from virt_debug.backends.libvirt import session
from virt_debug.backends.libvirt.daemon import SessionDaemon, default_uid
from virt_debug.demo.guest import create_guest

GUARD = 300.0
POLL = 0.05


def chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.lchown(p, uid, gid)


def untraced(conn, xml: str, guest) -> dict[str, float]:
    t0 = time.monotonic()
    dom = conn.defineXML(xml)
    t1 = time.monotonic()
    dom.create()
    t2 = time.monotonic()
    while not guest.greeted():
        if time.monotonic() - t2 > GUARD:
            raise RuntimeError("untraced guest never printed its line")
        time.sleep(POLL)
    t3 = time.monotonic()
    try:
        dom.destroy()
    except libvirt.libvirtError:
        pass  # it powered itself off in the meantime
    dom.undefine()
    return {"define": t1 - t0, "start": t2 - t1, "serial": t3 - t1}


def traced(conn, xml_path: Path, guest, output: Path, full: bool) -> dict[str, float]:
    seen: list[float] = []

    def watch() -> bool:
        if guest.greeted():
            seen.append(time.monotonic())
            return True
        return False

    target = domains.resolve(conn, str(xml_path))
    options = session.RunOptions(output=output, duration=GUARD, full=full)
    output.mkdir(parents=True)
    chown_tree(output, *_owner(guest.directory))
    t0 = time.monotonic()
    result = session.run(conn, target, options, watch=watch)
    if result.start_error or not seen:
        raise RuntimeError(
            f"traced start failed: {result.start_error or result.ended_by}"
        )
    started = t0 + result.timings["define"]
    return {
        "define": result.timings["define"],
        "start": result.timings["start"],
        "serial": seen[0] - started,
    }


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


def table(results: dict[str, list[dict[str, float]]]) -> str:
    modes = list(results)
    keys = ("define", "start", "total", "serial")
    for runs in results.values():
        for r in runs:
            r["total"] = r["define"] + r["start"]
    med = {
        m: {k: statistics.median(r[k] for r in results[m]) for k in keys} for m in modes
    }
    head = f"{'median seconds':<22}" + "".join(f"{m:>12}" for m in modes)
    head += "".join(f"{m + '/untraced':>20}" for m in modes[1:])
    lines = [head, "-" * len(head)]
    for k, label in zip(
        keys,
        (
            "define (hook, probe)",
            "start (create)",
            "define + start",
            "start to serial line",
        ),
        strict=True,
    ):
        row = f"{label:<22}" + "".join(f"{med[m][k]:>12.2f}" for m in modes)
        base = med[modes[0]][k]
        row += "".join(
            f"{(med[m][k] / base if base else float('nan')):>19.2f}x" for m in modes[1:]
        )
        lines.append(row)

    # The rounds alternate the modes, so each round's own ratio cancels the machine's
    # drift (other jobs, caches); their median is the steadier figure.
    lines += [
        "",
        f"{'median of per-round ratios':<34}"
        + "".join(f"{m + '/untraced':>20}" for m in modes[1:]),
    ]
    for k in ("start", "total", "serial"):
        row = f"{k:<34}"
        for m in modes[1:]:
            pairs = zip(results[m], results[modes[0]], strict=True)
            ratios = [t[k] / u[k] for t, u in pairs if u[k] > 0]
            row += f"{statistics.median(ratios) if ratios else float('nan'):>19.2f}x"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=5)
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    parser.add_argument("--no-full", action="store_true", help="skip the --full mode")
    parser.add_argument("--keep", type=Path, help="keep guests and traces here")
    parser.add_argument(
        "--leave-out",
        metavar="CALLS",
        help="try another default-mode filter: the comma-separated calls to leave "
        "out instead of the strace debugger's HOT_CALLS",
    )
    parser.add_argument(
        "--strace-options",
        metavar="OPTIONS",
        help="try other output options instead of the strace debugger's "
        "COMMON_OPTIONS (space-separated, e.g. '-f -tt -T -y')",
    )
    args = parser.parse_args()
    if args.strace_options is not None:
        from virt_debug.debuggers import strace

        strace.COMMON_OPTIONS = args.strace_options.split()
        print(f"strace output options: {' '.join(strace.COMMON_OPTIONS)}")
    if args.leave_out is not None:
        from virt_debug.debuggers import strace

        strace.HOT_CALLS = tuple(c for c in args.leave_out.split(",") if c)
        print(f"default mode leaves out: {' '.join(strace.HOT_CALLS)}")

    base = Path(tempfile.mkdtemp(prefix="virt-debug-bench-", dir="/tmp"))
    base.chmod(0o755)
    daemon = SessionDaemon(base / "session", uid=default_uid())
    daemon.start()
    # This process is the client: the daemon's environment tells libvirt (and the
    # backend, for the domain log) where the session lives.
    os.environ.update(daemon.env())
    conn = libvirt.open(daemon.direct_uri)
    libvirt.registerErrorHandler(lambda _c, _e: None, None)

    work = base / "work"
    work.mkdir()
    modes = ["untraced", "default"] + ([] if args.no_full else ["full"])
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    session.POLL_SECONDS = POLL
    try:
        for n in range(args.rounds):
            for mode in modes:
                guest = create_guest(
                    work / f"{mode}-{n}" / "guest",
                    name=f"bench-{mode}",
                    accel=args.accel,
                    # Halting, not powering off: the run ends once the line is seen.
                    power_off=False,
                )
                chown_tree(work / f"{mode}-{n}", daemon.uid, daemon.gid)
                if mode == "untraced":
                    r = untraced(conn, guest.xml_path.read_text(), guest)
                else:
                    out = work / f"{mode}-{n}" / "out"
                    r = traced(conn, guest.xml_path, guest, out, full=mode == "full")
                results[mode].append(r)
                print(
                    f"round {n + 1} {mode:>8} ({guest.domain_type}): "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in r.items()),
                    flush=True,
                )
    finally:
        conn.close()
        daemon.stop()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(work, args.keep / base.name)
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(table(results))


if __name__ == "__main__":
    main()
