"""``virt-debug kubevirt ...``: trace a KubeVirt VM's QEMU in its virt-launcher pod.

Also the ``kubectl virt-debug`` plugin (the same commands at top level).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console

from virt_debug.cli.durations import parse_duration
from virt_debug.errors import TraceInputError, UsageError

EXAMPLES_RUN = """
\b
Examples:
  virt-debug kubevirt run strace myvm -n myns
  virt-debug kubevirt run strace myvm --until-stopped --output ./traces
  virt-debug kubevirt run strace myvm --dry-run -o yaml     # review first
  kubectl virt-debug run strace myvm --context prod -n myns
"""


KUBEVIRT_DEBUGGERS = ("strace",)


class KubeVirtDebugger(click.ParamType):
    """A debugger name, refused with the reason when it is not wired to KubeVirt."""

    name = "debugger"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if value in KUBEVIRT_DEBUGGERS:
            return value
        from virt_debug.debuggers import NAMES

        if value in NAMES:
            self.fail(
                f"{value} is not supported on KubeVirt yet: only strace is, so far "
                "(see --help)",
                param,
                ctx,
            )
        self.fail(
            f"{value!r} is not a debugger; only strace is supported on KubeVirt",
            param,
            ctx,
        )


class OutputFormat(click.Choice):
    """yaml or json; a directory given to -o gets pointed at --output."""

    def __init__(self) -> None:
        super().__init__(["yaml", "json"])

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value not in self.choices:
            # Elsewhere in virt-debug -o names an output file or directory.
            params = ctx.command.params if ctx is not None else []
            where = ""
            if any(p.name == "output_dir" for p in params):
                where = " (the traces' directory is --output DIR)"
            self.fail(
                f"{value!r} is not yaml or json: -o is --output-format here{where}",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def _stack(*decorators):
    """One decorator applying several, the first outermost (as written above)."""

    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


connection_options = _stack(
    click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, "
        "else the pod's in-cluster account).",
    ),
    click.option("--context", metavar="NAME", help="Kubeconfig context to use."),
    click.option(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        help="Namespace of the VM (default: the context's namespace).",
    ),
    click.option(
        "--exec-local",
        "exec_local",
        multiple=True,
        hidden=True,
        help="CLAIM=DIR: run helper commands here, DIR standing for the PVC "
        "(the exec seam, for tests and offline checks).",
    ),
    click.option(
        "--poll",
        type=click.FloatRange(min=0.001),
        default=1.0,
        hidden=True,
        help="Seconds between two looks at the cluster (for tests).",
    ),
)

# For the commands that change something: print the change instead.
plan_options = _stack(
    click.option(
        "--dry-run",
        is_flag=True,
        help="Change nothing: print the objects that would be created or changed.",
    ),
    click.option(
        "-o",
        "--output-format",
        type=OutputFormat(),
        default="yaml",
        show_default=True,
        help="Format of the objects --dry-run prints, as kubectl's -o.",
    ),
)

pvc_option = click.option(
    "--pvc",
    "claim",
    default="",
    metavar="NAME",
    help="PVC for the tools and traces (default: virt-debug-VM; created if missing).",
)

# For the commands that may create the PVC.
new_pvc_options = _stack(
    click.option(
        "--pvc-size",
        default="1Gi",
        show_default=True,
        metavar="SIZE",
        help="Size of a new PVC (the strace bundle takes about 7 MB; the "
        "traces the rest).",
    ),
    click.option(
        "--storage-class",
        default=None,
        metavar="NAME",
        help="Storage class of a new PVC.",
    ),
    click.option(
        "--access-mode",
        default="ReadWriteOnce",
        show_default=True,
        type=click.Choice(["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]),
        help="Access mode of a new PVC; ReadWriteMany lets the traces be read "
        "while the VM runs on another node.",
    ),
)

helper_image_option = click.option(
    "--helper-image",
    default=None,
    metavar="IMAGE",
    help="Image of the helper pod that moves files (needs python3; "
    "default: the cluster's sidecar-shim image).",
)

output_option = click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Where the traces go (default ./virt-debug-out/VM-TIME/).",
)

gate_option = click.option(
    "--enable-sidecar-gate",
    is_flag=True,
    help="Turn KubeVirt's Sidecar feature gate on if it is off "
    "(turned off again on restore).",
)

recreate_option = click.option(
    "--recreate-vmi",
    is_flag=True,
    help="For a VMI without a VM: delete it and create it again with "
    "the hook (the guest restarts).",
)


class Display:
    """Progress on stderr: a spinner with the current step, and one line per step
    with the time since the start, so the history stays on screen."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.start = time.monotonic()
        self.status: Any = None

    def __enter__(self) -> Display:
        self.status = self.console.status("connecting", spinner="dots")
        self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def __call__(self, text: str) -> None:
        style = None
        if text.startswith("warning:"):
            style = "yellow"
        elif "failed" in text or text.startswith("could not"):
            style = "red"
        stamp = f"{time.monotonic() - self.start:6.1f}s "
        self.console.print(stamp + text, style=style, markup=False, soft_wrap=True)
        if self.status is not None:
            self.status.update(text.strip())


def _session(vm: str, kw: dict[str, Any], **options: Any):
    from virt_debug.backends.kubevirt.client import Connection, connect
    from virt_debug.backends.kubevirt.flow import Options, Session
    from virt_debug.backends.kubevirt.preflight import check_names, check_options
    from virt_debug.backends.kubevirt.transport import KubeExec, LocalExec, PodExec

    # What needs no cluster is refused before the kubeconfig is even read (its
    # auth plugin may prompt or reach the network): options only a command
    # has are None for the others.
    check_names(vm, kw.get("namespace") or None, kw.get("claim") or "")
    check_options(
        size=kw.get("pvc_size"),
        storage_class=kw.get("storage_class"),
        helper_image=kw.get("helper_image"),
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # urllib3 warns of each retry; a failure ends in one error line of ours.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    kube = connect(
        Connection(
            kubeconfig=kw.get("kubeconfig"),
            context=kw.get("context"),
            namespace=kw.get("namespace"),
        )
    )
    pod_exec: PodExec
    if kw.get("exec_local"):
        volumes = {}
        for item in kw["exec_local"]:
            claim, _, directory = item.partition("=")
            volumes[claim] = Path(directory)
        pod_exec = LocalExec(kube, volumes)
    else:
        pod_exec = KubeExec(kube)
    known = Options.__dataclass_fields__
    if kw.get("pvc_size"):
        options.setdefault("size", kw["pvc_size"])
    opts = Options(
        **{k: v for k, v in {**kw, **options}.items() if k in known and v is not None}
    )
    return Session(kube, pod_exec, vm, kube.namespace, opts, Display())


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the hook script) as literal blocks, readable in review."""


def _block_strings(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _block_strings)


def _print_plan(planned, fmt: str) -> None:
    docs = [p.manifest for p in planned if p.manifest is not None]
    notes = [f"{p.verb}: {p.note}" for p in planned if p.manifest is None and p.note]
    if fmt == "json":
        click.echo(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2)
        )
    else:
        text = yaml.dump_all(
            docs, Dumper=_BlockDumper, sort_keys=False, explicit_start=True
        )
        click.echo(text, nl=False)
    for note in notes:
        # Comments on stderr keep stdout a clean document, ready for kubectl apply.
        click.echo(f"# would {note}", err=True)


def _analyze(dest: Path) -> None:
    from virt_debug.trace import analyze_launches
    from virt_debug.trace.report import render_launches

    try:
        # A fetch after restarts holds several launches: each is explained on its own.
        launches = analyze_launches([dest])
    except TraceInputError as e:
        # The run itself worked; say what is there instead of failing it.
        click.echo(f"traces in {dest}; no analysis: {e}")
        return
    click.echo(f"traces in {dest}\n")
    click.echo(render_launches(launches, "text", color=sys.stdout.isatty()))


@click.group("kubevirt")
def kubevirt() -> None:
    """Trace a KubeVirt VM's QEMU inside its virt-launcher pod, without building an
    image, and put the VM back as it was.

    \b
    One command does it all:
      virt-debug kubevirt run strace myvm -n myns
    or step by step, holding the VM in the traced state:
      virt-debug kubevirt setup myvm        # PVC + tools (bundle, wrapper, hook)
      virt-debug kubevirt attach myvm --restart
      virt-debug kubevirt fetch myvm --output ./traces
      virt-debug kubevirt detach myvm       # undo everything recorded
    Every command that changes something takes --dry-run -o yaml (or -o json)
    to print the objects instead; the traces' directory is --output DIR.
    Only strace runs on KubeVirt so far. Needs KubeVirt v1.2.0+ with the
    Sidecar feature gate.
    """


@kubevirt.command("run", epilog=EXAMPLES_RUN)
@click.argument("debugger", type=KubeVirtDebugger(), metavar="DEBUGGER")
@click.argument("vm")
@connection_options
@plan_options
@pvc_option
@new_pvc_options
@helper_image_option
@gate_option
@recreate_option
@click.option(
    "--duration",
    default=None,
    metavar="DURATION",
    help="How long to trace once QEMU runs (90, 30s, 5m, 1h; default 30s).",
)
@click.option("--until-stopped", is_flag=True, help="Trace until the guest stops.")
@output_option
@click.option(
    "--full",
    is_flag=True,
    help="Trace every call (slow; default leaves out a few hot ones).",
)
@click.option(
    "--start-timeout",
    default="5m",
    metavar="DURATION",
    show_default=True,
    help="How long to wait for the traced VM to run.",
)
@click.option(
    "--delete-pvc", is_flag=True, help="Delete the PVC we created at the end."
)
def run_command(debugger: str, vm: str, **kw: Any) -> None:
    """Trace the next start of VM's QEMU with DEBUGGER, fetch and explain the traces.

    Restarts the VM (or starts it if stopped) with a hook sidecar that wraps QEMU,
    follows it to running or failure, then detaches, puts the VM back as it was
    (on failure and Ctrl-C too), copies the traces here and prints the analysis.

    DEBUGGER is strace: only strace runs on KubeVirt so far, as the bundle
    uploaded to the PVC carries strace. A gdbserver bundle can be built
    (`virt-debug bundle --debugger gdbserver`) but nothing uploads or wires it
    to a VM yet.
    """
    if kw["duration"] and kw["until_stopped"]:
        raise UsageError("choose one of --duration and --until-stopped")
    given = kw.pop("duration")
    duration = parse_duration("30s" if given is None else given)
    start_timeout = parse_duration(kw.pop("start_timeout"), "--start-timeout")
    session = _session(
        vm, kw, debugger=debugger, duration=duration, start_timeout=start_timeout
    )
    with session.report:
        planned, dest = session.run(kw["output_dir"])
    if kw["dry_run"]:
        _print_plan(planned, kw["output_format"])
        return
    if dest is not None:
        _analyze(dest)


@kubevirt.command("setup")
@click.argument("vm")
@connection_options
@plan_options
@pvc_option
@new_pvc_options
@helper_image_option
@gate_option
@click.option(
    "--debugger",
    default="strace",
    show_default=True,
    type=KubeVirtDebugger(),
    metavar="DEBUGGER",
    help="The debugger the wrapper runs QEMU under (only strace on KubeVirt so far).",
)
@click.option(
    "--full",
    is_flag=True,
    help="Trace every call (slow; default leaves out a few hot ones).",
)
def setup_command(vm: str, **kw: Any) -> None:
    """Create the tools PVC and upload the debugger bundle, wrapper and hook.

    \b
    Example:
      virt-debug kubevirt setup myvm -n myns --storage-class fast --pvc-size 2Gi
    """
    session = _session(vm, kw)
    with session.report:
        planned = session.setup()
    if kw["dry_run"]:
        _print_plan(planned, kw["output_format"])


@kubevirt.command("attach")
@click.argument("vm")
@connection_options
@plan_options
@gate_option
@recreate_option
@click.option(
    "--restart",
    is_flag=True,
    help="Restart (or start) the VM now so the hook applies, and follow it.",
)
def attach_command(vm: str, **kw: Any) -> None:
    """Add our hook sidecar to VM's template (other sidecars are kept).

    Takes effect at the VM's next start: pass --restart, or restart it yourself.
    Run `setup` first: the PVC and tools are the ones it made. Attaching twice
    changes nothing.

    \b
    Example:
      virt-debug kubevirt attach myvm -n myns --dry-run -o yaml
    """
    session = _session(vm, kw)
    with session.report:
        planned = session.attach(restart=kw["restart"])
    if kw["dry_run"]:
        _print_plan(planned, kw["output_format"])


@kubevirt.command("detach")
@click.argument("vm")
@connection_options
@plan_options
@click.option("--delete-pvc", is_flag=True, help="Also delete the PVC we created.")
@click.option(
    "--no-restart",
    is_flag=True,
    help="Leave the VM running with the hook until its next restart.",
)
def detach_command(vm: str, **kw: Any) -> None:
    """Undo what virt-debug changed on VM, from the record kept on the cluster.

    Removes only our sidecar entry (the annotation gets its exact earlier value),
    deletes our ConfigMaps and helper pods, restarts or stops the VM back, and
    turns the Sidecar gate off if we turned it on. Also undoes a crashed run.

    \b
    Example:
      virt-debug kubevirt detach myvm -n myns --delete-pvc
    """
    session = _session(vm, kw, delete_pvc=kw["delete_pvc"])
    with session.report:
        planned = session.detach(restart_back=not kw["no_restart"])
    if kw["dry_run"]:
        _print_plan(planned, kw["output_format"])


@kubevirt.command("fetch")
@click.argument("vm")
@connection_options
@plan_options
@click.option(
    "--pvc",
    "claim",
    default="",
    metavar="NAME",
    help="PVC to read when no run is recorded, as after `run --pvc NAME` "
    "(default: virt-debug-VM).",
)
@helper_image_option
@output_option
@click.option(
    "--all",
    "every_run",
    is_flag=True,
    help="Every run's traces, not only the current one's.",
)
@click.option("--no-analysis", is_flag=True, help="Only copy the traces.")
def fetch_command(vm: str, **kw: Any) -> None:
    """Copy VM's traces off the PVC through a helper pod and explain them.

    \b
    Example:
      virt-debug kubevirt fetch myvm -n myns --output ./traces
    """
    session = _session(vm, kw)
    with session.report:
        planned, dest = session.fetch(kw["output_dir"], every_run=kw["every_run"])
    if kw["dry_run"]:
        _print_plan(planned, kw["output_format"])
        return
    if not kw["no_analysis"]:
        _analyze(dest)


@kubevirt.command("status")
@click.argument("vm")
@connection_options
@click.option(
    "-o",
    "--output-format",
    type=OutputFormat(),
    default="yaml",
    show_default=True,
    help="Format of the status.",
)
def status_command(vm: str, **kw: Any) -> None:
    """Show what virt-debug has changed on VM and how its VMI is doing.

    \b
    Example:
      virt-debug kubevirt status myvm -n myns -o json
    """
    from virt_debug.backends.kubevirt.status import describe

    session = _session(vm, kw)
    state = describe(session.kube, session.namespace, vm)
    if kw["output_format"] == "json":
        click.echo(json.dumps(state, indent=2))
    else:
        click.echo(yaml.safe_dump(state, sort_keys=False), nl=False)


COMMANDS = [kubevirt]
