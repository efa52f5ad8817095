"""Hostile and unusual input to the KubeVirt side, against the local API server over
real HTTP: invalid names, broken kubeconfigs, API answers that are errors or not
JSON, Ctrl-C at each phase. Each must end in one line, no traceback, and the VM as
it was."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import kmock
import pytest
import yaml

from kube_server import CONFIGMAPS, PODS, PVCS, VM, VMI, KubeServer
from kubevirt_fake import example_vm, kubevirt_cr
from test_kubevirt_flows import CLAIM, NS, Cluster
from virt_debug.backends.kubevirt.client import Connection, connect
from virt_debug.backends.kubevirt.objects import SIDECAR_ANNOTATION
from virt_debug.cli import main as cli_main
from virt_debug.errors import Interrupted, KubernetesError, UsageError

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "pvc").mkdir()
    with KubeServer({CLAIM: tmp_path / "pvc"}) as server:
        yield Cluster(server, tmp_path, kubevirt_cr("v1.3.0"))
        assert not server.errors, server.errors


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        cli_main.main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("virt-debug:")]
    assert len(lines) == 1, err
    return lines[0]


def comparable(vm: dict) -> dict:
    """The VM without what the server bumps on every write."""
    vm = json.loads(json.dumps(vm))
    vm["metadata"].pop("resourceVersion", None)
    return vm


# Names end up in request paths and in the names of what we create.


@pytest.mark.parametrize(
    "args",
    [
        ["VM1"],
        ["../kubevirts"],
        ["a/b"],
        ["vm1?x=1"],
        ["vmé"],
        [""],
        ["a" * 254],
        ["vm1", "-n", "../kube-system"],
        ["vm1", "-n", "NS1"],
        ["vm1", "-n", "a.b"],
        ["vm1", "--pvc", "tools.v1"],
    ],
)
def test_invalid_names_are_refused_before_anything_is_read(cluster, capsys, args):
    before = comparable(cluster.add_vm())
    requests = cluster.server.call(lambda: len(cluster.server.kmock._requests))
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        *args,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--dry-run",
    )
    assert code == 2, err
    assert "is not valid" in one_line_error(err)
    assert out == ""
    assert cluster.server.call(lambda: len(cluster.server.kmock._requests)) == requests
    assert comparable(cluster.vm()) == before


@pytest.mark.parametrize("name", ["web.prod", "a" * 63, "x." * 120 + "end"])
def test_names_we_derive_are_dns_labels_even_for_long_or_dotted_vm_names(
    cluster, capsys, name
):
    vm = example_vm(name, NS, running=False)
    cluster.server.put(VM, NS, vm)
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        name,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--dry-run",
    )
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    ours = [d for d in docs if d["kind"] != "VirtualMachine"]
    assert len(ours) == 4
    for doc in ours:
        # KubeVirt names the launcher pod's volumes after our ConfigMap and PVC.
        assert DNS_LABEL.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert len(doc["metadata"]["name"]) <= 63
        for value in doc["metadata"]["labels"].values():
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value
    (traced,) = [d for d in docs if d["kind"] == "VirtualMachine"]
    annotation = traced["spec"]["template"]["metadata"]["annotations"]
    entry = json.loads(annotation[SIDECAR_ANNOTATION])[-1]
    assert DNS_LABEL.fullmatch(entry["configMap"]["name"])
    assert DNS_LABEL.fullmatch(entry["pvc"]["name"])


def test_dotted_names_do_not_collide_with_dashed_ones():
    from virt_debug.backends.kubevirt.objects import Names, label_value

    dotted, dashed = Names("web.prod"), Names("web-prod")
    assert dotted.hook_configmap != dashed.hook_configmap
    assert dotted.volume != dashed.volume
    # Names without dots or excess length stay as they always were.
    assert dashed.hook_configmap == "virt-debug-web-prod-hook"
    assert label_value("web.prod") == "web.prod"


def test_detach_without_a_record_finds_our_objects_of_a_long_named_vm(cluster):
    name = "v" * 70
    cluster.server.put(VM, NS, example_vm(name, NS, running=False))
    session = cluster.session(name)
    changes = session._changes(resume=True)
    changes.persist = False
    from virt_debug.backends.kubevirt.objects import hook_configmap

    changes.create(hook_configmap(changes.record.names.hook_configmap, NS, name, "x"))
    assert [n for n in cluster.server.names(CONFIGMAPS, NS) if "virt-debug" in n]
    cluster.session(name).detach()
    assert not [n for n in cluster.server.names(CONFIGMAPS, NS) if "virt-debug" in n]


# The connection: kubeconfigs of every kind of broken.


@pytest.mark.parametrize(
    "content",
    [
        "apiVersion: v1\nclusters: [\n  - : :\n",
        "just a string\n",
        "- 1\n- 2\n",
        "",
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n",
    ],
)
def test_broken_kubeconfig_is_one_line(tmp_path, capsys, content):
    config = tmp_path / "config"
    config.write_text(content)
    code, _, err = invoke(
        capsys, "kubevirt", "status", "vm1", "--kubeconfig", str(config)
    )
    assert code == 4, err
    line = one_line_error(err)
    # A current-context the file lacks is named, with the contexts it has.
    assert "cannot load the cluster configuration" in line or (
        "current-context 'gone' is not in" in line
    )


def laughs(levels: int = 9, width: int = 9) -> str:
    """A YAML "billion laughs": small to read, width ** levels nodes expanded."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"x"'] * width) + "]"]
    for before, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{before}"] * width) + "]")
    return "\n".join(lines) + "\n"


def valid_kubeconfig(tmp_path) -> str:
    server = type("S", (), {"url": "http://127.0.0.1:1"})()
    return KubeServer.kubeconfig(server, tmp_path / "valid").read_text()


def guarded_cli(*args: str, env: dict[str, str] | None = None):
    """The CLI in a child whose memory is capped, under a generous time limit: a
    file that expands without bound fails the test instead of eating the host."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from virt_debug.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param(laughs(), id="billion-laughs"),
        pytest.param("x: &x [*x, *x]\n", id="recursive-alias"),
        pytest.param(laughs(levels=4, width=40), id="wide-laughs"),
    ],
)
@pytest.mark.parametrize("given", ["--kubeconfig", "$KUBECONFIG"])
def test_a_kubeconfig_that_expands_without_bound_is_refused_at_once(
    tmp_path, bomb, given
):
    config = tmp_path / "bomb.yaml"
    config.write_text(bomb + valid_kubeconfig(tmp_path))
    args = ["kubevirt", "run", "strace", "vm1", "--dry-run"]
    env = None
    if given == "--kubeconfig":
        args += ["--kubeconfig", str(config)]
    else:
        # A path list, as kubectl takes it: every file in it is checked.
        env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "valid"), str(config)])}
    result = guarded_cli(*args, env=env)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"virt-debug: error: kubeconfig {config} expands to too many YAML nodes "
        "(aliases); refusing it (check where this file came from, or pass another "
        "--kubeconfig)"
    ]
    assert result.stdout == ""


def test_a_kubeconfig_nested_too_deeply_is_one_line(tmp_path):
    config = tmp_path / "deep.yaml"
    config.write_text(valid_kubeconfig(tmp_path) + "x: " + "[" * 5000 + "]" * 5000)
    result = guarded_cli("kubevirt", "status", "vm1", "--kubeconfig", str(config))
    assert result.returncode == 4, result.stderr
    assert result.stderr.splitlines() == [
        f"virt-debug: error: kubeconfig {config} nests too deeply; refusing it "
        "(check where this file came from, or pass another --kubeconfig)"
    ]


def test_a_kubeconfig_with_a_few_anchors_still_loads(tmp_path):
    # Anchors and aliases are ordinary YAML; only their blow-up is refused. Below
    # the bound: 6 ** 6 = 46,656 strings.
    config = tmp_path / "config"
    config.write_text(
        laughs(levels=6, width=6)
        + """
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: &cluster {server: "http://127.0.0.1:1"}
- name: copy
  cluster: *cluster
users:
- {name: tester, user: {token: local-test-token}}
contexts:
- {name: local, context: {cluster: local, user: tester, namespace: ns7}}
current-context: local
"""
    )
    kube = connect(Connection(kubeconfig=str(config)))
    assert kube.namespace == "ns7"
    assert kube.host == "http://127.0.0.1:1"


def test_missing_context_and_missing_file_are_one_line(cluster, tmp_path, capsys):
    code, _, err = invoke(
        capsys,
        "kubevirt",
        "status",
        "vm1",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--context",
        "nope",
    )
    assert code == 4 and "nope" in one_line_error(err)
    code, _, err = invoke(
        capsys, "kubevirt", "status", "vm1", "--kubeconfig", str(tmp_path / "none")
    )
    assert code == 4 and "cannot load" in one_line_error(err)


def test_connection_refused_is_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = type("S", (), {"url": f"http://127.0.0.1:{port}"})()
    config = KubeServer.kubeconfig(server, tmp_path / "config")
    code, _, err = invoke(
        capsys, "kubevirt", "status", "vm1", "--kubeconfig", str(config)
    )
    assert code == 4
    assert "cannot reach the API server" in one_line_error(err)


def test_a_server_that_never_answers_times_out_with_one_error(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server = type("S", (), {"url": url})()
        config = KubeServer.kubeconfig(server, tmp_path / "config")
        kube = connect(Connection(kubeconfig=str(config), request_timeout=0.3))
        with pytest.raises(KubernetesError, match="cannot reach the API server"):
            kube.get("/api/v1/namespaces/ns1/configmaps/x")
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        listener.close()


def react(cluster, method: str, resource, when, answer, *, nth: int = 0) -> list:
    """Answer the requests ``when(request)`` picks with ``answer`` (a status code, a
    body, or a callable); with ``nth``, only the nth of them (from 1). Returns the
    list of requests answered so, for the test to check it happened."""
    seen: list[int] = []
    fired: list = []

    floor: list[int] = []

    def picked(request) -> bool:
        # Filters also see the requests of the past, and more than once.
        if request.id <= floor[0] or not when(request):
            return False
        if request.id not in seen:
            seen.append(request.id)
        return not nth or seen.index(request.id) + 1 == nth

    def respond(request):
        fired.append(request)
        return answer(request) if callable(answer) else answer

    if method == "action":
        # The fake answers VM actions itself: hook in there, on the nth call.
        calls: list[int] = []

        def on_action() -> None:
            calls.append(1)
            if len(calls) == nth:
                respond(None)

        cluster.fake.on_action[resource] = on_action
        return fired

    def install() -> None:
        floor.append(max((r.id for r in cluster.server.kmock._requests), default=-1))
        if isinstance(resource, str):
            view = cluster.server.kmock[method, kmock.resource(resource), picked]
        else:
            view = cluster.server.kmock[method, resource, picked]
        if callable(answer):
            view << respond
        else:
            view << 200 << respond

    cluster.server.call(install)
    return fired


def refuse(status: int, reason: str):
    def answer(request):
        raise kmock.KubernetesError(
            status=status, reason=reason, message=f"refused by the test ({status})"
        )

    return answer


# API answers that are not what a Kubernetes API server sends.


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"[1, 2]", b"42"])
def test_answers_that_are_not_objects_midway_restore_the_vm(cluster, tmp_path, body):
    before = comparable(cluster.add_vm())
    # The helper pod's status comes back as garbage: the PVC, the record and the
    # hook ConfigMap exist by then.
    react(cluster, "get", PODS, lambda r: "helper" in (r.name or ""), body)
    with pytest.raises(
        KubernetesError, match="did not answer with a Kubernetes object"
    ):
        cluster.session().run(tmp_path / "out")
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html>\n<body>\nBad   Gateway\n</body>\n</html>\n",
        b"[1, 2]",
        b'"a string"',
        b"",
    ],
)
def test_error_answers_of_any_shape_are_one_line_midway(cluster, tmp_path, body):
    before = comparable(cluster.add_vm())

    def install() -> None:
        picked = kmock.resource(CONFIGMAPS)
        (
            cluster.server.kmock["post", picked, lambda r: "hook" in r.text]
            << 502
            << (body or None)
        )

    cluster.server.call(install)
    with pytest.raises(KubernetesError) as caught:
        cluster.session().run(tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("POST /api/v1/namespaces/ns1/configmaps: 502")
    assert "\n" not in message
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []


# Refusals and Ctrl-C at each phase of a run: the VM ends as it was.

ANY = lambda r: True  # noqa: E731
PHASES = {
    "create the PVC": ("post", PVCS, ANY, 1),
    "create the hook ConfigMap": (
        "post",
        CONFIGMAPS,
        lambda r: (r.data or {}).get("metadata", {}).get("name", "").endswith("hook"),
        1,
    ),
    "create the upload helper": ("post", PODS, ANY, 1),
    "patch the VM": ("patch", VM, ANY, 1),
    "restart the VM": ("action", "restart", None, 1),
    "follow the VMI": ("get", VMI, ANY, 3),
    "wait while tracing": ("get", VMI, ANY, 8),
    "restart the VM back": ("action", "restart", None, 2),
    "create the fetch helper": ("post", PODS, ANY, 2),
    "delete a helper": ("delete", PODS, ANY, 1),
}


def check_as_it_was(cluster, before: dict, error: BaseException | None) -> None:
    assert comparable(cluster.vm()) == before
    if error is not None:
        text = str(error)
        assert "\n" not in text and "Traceback" not in text
        if "the record stays" in text:
            # Left for `detach`, which must then finish the job.
            cluster.session().detach()
    assert cluster.ours_left() == []


REFUSALS = [(phase, 500) for phase in PHASES] + [
    ("patch the VM", 403),
    ("patch the VM", 409),
    ("restart the VM", 409),
    ("create the upload helper", 403),
]


@pytest.mark.parametrize("phase, status", REFUSALS)
def test_a_refusal_at_any_phase_leaves_the_vm_as_it_was(
    cluster, tmp_path, phase, status
):
    before = comparable(cluster.add_vm())
    method, resource, when, nth = PHASES[phase]
    fired = react(cluster, method, resource, when, refuse(status, "Refused"), nth=nth)
    error = None
    try:
        cluster.session(duration=0.3).run(tmp_path / "out")
    except KubernetesError as e:
        error = e
    assert fired, "the phase was never reached"
    check_as_it_was(cluster, before, error)


@pytest.mark.parametrize("phase", list(PHASES))
def test_ctrl_c_at_any_phase_leaves_the_vm_as_it_was(cluster, tmp_path, phase):
    before = comparable(cluster.add_vm())
    method, resource, when, nth = PHASES[phase]

    def interrupt(request):
        os.kill(os.getpid(), signal.SIGINT)

    fired = react(cluster, method, resource, when, interrupt, nth=nth)
    error = None
    try:
        cluster.session(duration=0.3).run(tmp_path / "out")
    except (Interrupted, KeyboardInterrupt, KubernetesError) as e:
        error = e
    assert fired, "the phase was never reached"
    check_as_it_was(cluster, before, error)
    # Ctrl-C is held back while the VM is put back, then honoured.
    assert isinstance(error, (Interrupted, KeyboardInterrupt)), error


# Odd timing and odd options.


def test_a_guest_that_stops_between_two_polls_counts_as_traced(cluster, tmp_path):
    cluster.add_vm()
    cluster.fake.guest_stops = True
    # Running lasts one tick of the fake controller, far shorter than a poll.
    session = cluster.session(until_stopped=True, duration=None, poll=0.5)
    _, dest = session.run(tmp_path / "out")
    assert session.outcome.running, cluster.lines
    assert not any("failed" in line for line in cluster.lines)
    assert list(dest.rglob("argv"))


def test_fetch_without_a_pvc_says_so_and_creates_nothing(cluster, tmp_path):
    cluster.add_vm()
    with pytest.raises(KubernetesError, match="no PVC virt-debug-vm1"):
        cluster.session().fetch(tmp_path / "out")
    assert cluster.ours_left() == []
    assert not (tmp_path / "out").exists()


def test_fetch_before_any_trace_and_from_an_empty_directory(cluster, tmp_path):
    cluster.add_vm()
    cluster.session().setup()
    with pytest.raises(KubernetesError, match="nothing to fetch"):
        cluster.session().fetch(tmp_path / "none", every_run=True)
    assert not (tmp_path / "none").exists()

    (cluster.pvc_dir / "vms" / "vm1" / "out").mkdir()
    _, dest = cluster.session().fetch(tmp_path / "out", every_run=True)
    assert dest.is_dir() and not list(dest.iterdir())
    # setup's record stays until detach; no helper pod is left.
    assert cluster.ours_left() == ["virt-debug-vm1-record"]


@pytest.mark.parametrize("option", ["--duration", "--start-timeout"])
@pytest.mark.parametrize(
    "value",
    ["", "-5", "5x", "1e9", "nan", "5 m s", "0", "0s", "0.0m", "9" * 400],
)
def test_bad_durations_are_refused_before_anything_changes(
    cluster, capsys, option, value
):
    before = comparable(cluster.add_vm())
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        "vm1",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--dry-run",
        option,
        value,
    )
    assert code == 2, err
    line = one_line_error(err)
    assert f"{option} " in line and "is not a duration above zero" in line
    assert out == ""
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []


# Options that end up in the objects we create: refused before the kubeconfig is
# read, with the option named.

BAD_OPTIONS = [
    ("--pvc-size", "x; rm -rf /", "not a Kubernetes quantity"),
    ("--pvc-size", "-5Gi", "not above zero"),
    ("--pvc-size", "0", "not above zero"),
    ("--pvc-size", "0Gi", "not above zero"),
    ("--pvc-size", "", "it is empty"),
    ("--pvc-size", "1 Gi", "not a Kubernetes quantity"),
    ("--pvc-size", "NaN", "not a Kubernetes quantity"),
    ("--pvc-size", "Infinity", "not a Kubernetes quantity"),
    ("--pvc-size", "1Gi\n", "not a Kubernetes quantity"),
    ("--storage-class", "Bad Class/../x", "not a DNS subdomain"),
    ("--storage-class", "fast\nx", "not a DNS subdomain"),
    ("--storage-class", "", "it is empty"),
    ("--helper-image", "evil\nimage:latest", "whitespace or a control character"),
    ("--helper-image", "evil image", "whitespace or a control character"),
    ("--helper-image", "evil\timage", "whitespace or a control character"),
    ("--helper-image", "evil\x1b[2Jimage", "whitespace or a control character"),
    ("--helper-image", "evil\u2028image", "whitespace or a control character"),
    ("--helper-image", "", "it is empty"),
]
COMMANDS_WITH = {
    "--pvc-size": ["run", "setup"],
    "--storage-class": ["run", "setup"],
    "--helper-image": ["run", "setup", "fetch"],
}
BAD_OPTION_CASES = [
    pytest.param(command, option, value, problem, id=f"{command}{option}={value!r}")
    for option, value, problem in BAD_OPTIONS
    for command in COMMANDS_WITH[option]
]


def command_args(command: str, *args: str) -> list[str]:
    head = ["kubevirt", "run", "strace"] if command == "run" else ["kubevirt", command]
    return [*head, "vm1", *args]


def unreachable_kubeconfig(tmp_path) -> str:
    # Port 1 on loopback: nothing listens, so any connection fails at once.
    server = type("S", (), {"url": "http://127.0.0.1:1"})()
    return str(KubeServer.kubeconfig(server, tmp_path / "unreachable", namespace=NS))


@pytest.mark.parametrize(("command", "option", "value", "problem"), BAD_OPTION_CASES)
def test_bad_options_are_refused_before_anything_is_read(
    cluster, capsys, command, option, value, problem
):
    before = comparable(cluster.add_vm())
    requests = cluster.server.call(lambda: len(cluster.server.kmock._requests))
    code, out, err = invoke(
        capsys,
        *command_args(
            command,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--dry-run",
            "-o",
            "yaml",
            option,
            value,
        ),
    )
    assert code == 2, err
    line = one_line_error(err)
    assert f"{option} " in line and "is not valid" in line and problem in line
    # Control characters of the value are shown escaped, not sent to the terminal.
    assert line.isprintable()
    assert out == ""
    assert cluster.server.call(lambda: len(cluster.server.kmock._requests)) == requests
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []


@pytest.mark.parametrize(("command", "option", "value", "problem"), BAD_OPTION_CASES)
def test_bad_options_are_refused_before_connecting(
    tmp_path, capsys, command, option, value, problem
):
    config = unreachable_kubeconfig(tmp_path)
    code, out, err = invoke(
        capsys,
        *command_args(command, "--kubeconfig", config, "--dry-run", option, value),
    )
    assert code == 2, err
    line = one_line_error(err)
    assert f"{option} " in line and problem in line
    assert "cannot reach" not in line
    assert out == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--duration", "0"],
        ["--start-timeout", "0s"],
        ["--pvc", "Tools"],
        ["-n", "NS1"],
    ],
)
def test_bad_durations_and_names_are_refused_before_connecting(tmp_path, capsys, args):
    config = unreachable_kubeconfig(tmp_path)
    code, out, err = invoke(
        capsys, *command_args("run", "--kubeconfig", config, "--dry-run", *args)
    )
    assert code == 2, err
    line = one_line_error(err)
    assert args[0] in line or "namespace" in line
    assert "cannot reach" not in line
    assert out == ""


def test_the_unreachable_kubeconfig_does_fail_to_connect(tmp_path, capsys):
    # The tests above would prove nothing if this kubeconfig could connect.
    config = unreachable_kubeconfig(tmp_path)
    code, _, err = invoke(
        capsys,
        *command_args("run", "--kubeconfig", config, "--dry-run", "--pvc-size", "2Gi"),
    )
    assert code == 4, err
    assert "cannot reach the API server" in one_line_error(err)


def test_good_options_reach_the_objects(cluster, capsys):
    cluster.add_vm()
    image = "registry.example.com:5000/tools/py@sha256:" + "ab" * 32
    code, out, err = invoke(
        capsys,
        *command_args(
            "setup",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--dry-run",
            "--pvc-size",
            "1.5Gi",
            "--storage-class",
            "fast.ssd-1",
            "--helper-image",
            image,
        ),
    )
    assert code == 0, err
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    spec = docs["PersistentVolumeClaim"]["spec"]
    assert spec["resources"]["requests"]["storage"] == "1.5Gi"
    assert spec["storageClassName"] == "fast.ssd-1"
    assert docs["Pod"]["spec"]["containers"][0]["image"] == image


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"size": "0"}, "--pvc-size"),
        ({"storage_class": "A_B"}, "--storage-class"),
        ({"helper_image": "a\nb"}, "--helper-image"),
        ({"duration": 0.0}, "--duration"),
        ({"start_timeout": -1.0}, "--start-timeout"),
        ({"duration": float("nan")}, "--duration"),
    ],
)
def test_a_session_refuses_bad_options_too(cluster, options, option):
    # Callers of the library, not only the CLI, get the same refusal.
    with pytest.raises(UsageError, match=f"^{option} .* is not valid"):
        cluster.session(**options)


# The hookSidecars annotation as users and other tools leave it.

OURS = {"name": "virt-debug-vm1-hook", "key": "k", "hookPath": "/usr/bin/x"}
FOREIGN = {"configMap": {"name": "my-config-map", "key": "my_script.sh"}}


def with_annotation(cluster, value: str | None, *, running: bool = False) -> dict:
    cluster.add_vm(running=running)
    vm = cluster.vm()
    annotations = vm["spec"]["template"]["metadata"]["annotations"]
    if value is None:
        del vm["spec"]["template"]["metadata"]
    else:
        annotations[SIDECAR_ANNOTATION] = value
    cluster.server.put(VM, NS, vm)
    return comparable(cluster.vm())


@pytest.mark.parametrize(
    "value, problem",
    [
        ('[{"image": ', "not valid JSON"),
        ('{"image": "x"}', "not a JSON list"),
        ('[1, "x", null]', "entry 0 is 1, not a JSON object"),
        ('[{"image": "x"}, []]', "entry 1 is [], not a JSON object"),
    ],
)
def test_an_unreadable_annotation_is_refused_before_anything_is_created(
    cluster, tmp_path, value, problem
):
    before = with_annotation(cluster, value)
    with pytest.raises(KubernetesError) as caught:
        cluster.session().run(tmp_path / "out")
    assert problem in str(caught.value)
    assert "restoring" not in str(caught.value)
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []
    assert cluster.server.names(PVCS, NS) == []
    assert cluster.fake.actions == []


def test_detach_after_setup_ignores_an_annotation_broken_meanwhile(cluster):
    cluster.add_vm(running=False)
    cluster.session().setup()
    vm = cluster.vm()
    vm["spec"]["template"]["metadata"]["annotations"][SIDECAR_ANNOTATION] = "[oops"
    cluster.server.put(VM, NS, vm)
    cluster.session().detach()
    assert cluster.ours_left() == []
    assert cluster.annotation() == "[oops"


@pytest.mark.parametrize(
    "sidecars",
    [
        # An entry naming our ConfigMap that is not what we would write.
        [{"configMap": OURS, "image": "someone/else:1"}, FOREIGN],
        # Ours twice, a leftover of some earlier attach.
        [{"configMap": OURS}, FOREIGN, {"configMap": OURS}],
    ],
)
def test_look_alikes_of_our_entry_come_back_exactly(cluster, tmp_path, sidecars):
    before = with_annotation(cluster, json.dumps(sidecars, indent=1))
    cluster.session().run(tmp_path / "out")
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_output_is_refused_before_the_vm_restarts(
    cluster, tmp_path, capsys, where
):
    before = comparable(cluster.add_vm())
    (tmp_path / "file").write_text("x")
    output = {
        "under-a-file": tmp_path / "file" / "traces",
        "proc": "/proc/virt-debug-traces",
    }[where]
    code, _, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        "vm1",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--output",
        str(output),
    )
    assert code == 2, err
    assert "cannot write the traces" in one_line_error(err)
    assert comparable(cluster.vm()) == before
    assert cluster.fake.actions == []
    assert cluster.ours_left() == [] and cluster.server.names(PVCS, NS) == []


# Pod Security "restricted", checked as the admission controller reads a pod.

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    if (pod_context.get("seLinuxOptions") or {}).get("type") not in (
        None,
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
    ):
        found.append("pod seLinuxOptions.type")
    if pod_context.get("sysctls"):
        found.append("pod sysctls")
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container.get("securityContext") or {}
        where = f"container {container['name']}"

        def either(key: str, context=context):
            return context.get(key, pod_context.get(key))

        if context.get("privileged"):
            found.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities")
        if either("runAsNonRoot") is not True:
            found.append(f"{where}: runAsNonRoot is not true")
        if either("runAsUser") == 0:
            found.append(f"{where}: runs as uid 0")
        profile = (either("seccompProfile") or {}).get("type")
        if profile not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccomp profile {profile}")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            found.append(f"{where}: hostPort")
        if context.get("procMount") not in (None, "Default"):
            found.append(f"{where}: procMount")
    return found


@pytest.mark.parametrize("command", ["run", "setup", "fetch"])
def test_every_pod_we_create_is_pod_security_restricted(cluster, capsys, command):
    cluster.add_vm(running=False)
    args = ["kubevirt", command] + (["strace"] if command == "run" else [])
    code, out, err = invoke(
        capsys,
        *args,
        "vm1",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--dry-run",
        "-o",
        "json",
    )
    assert code == 0, err
    pods = [i for i in json.loads(out)["items"] if i["kind"] == "Pod"]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []
        # What the check catches: the same pod, made privileged.
        bad = json.loads(json.dumps(pod))
        bad["spec"]["containers"][0]["securityContext"]["privileged"] = True
        assert restricted_violations(bad)


def test_a_run_that_begins_meanwhile_is_neither_clobbered_nor_undone(cluster, tmp_path):
    cluster.add_vm()
    # Another process attached just now: its record and entry are there, though
    # our first look (a GET of the record) still found nothing.
    cluster.attached()
    theirs = cluster.server.get(CONFIGMAPS, NS, "virt-debug-vm1-record")
    traced = comparable(cluster.vm())
    fired: list = []

    floor: list[int] = []

    def first_look(request) -> bool:
        # Filters also see the requests of the past, and more than once.
        if request.name != "virt-debug-vm1-record" or request.id <= floor[0]:
            return False
        if not fired:
            fired.append(request.id)
        return fired[0] == request.id

    def install() -> None:
        floor.append(max((r.id for r in cluster.server.kmock._requests), default=-1))
        status = {"kind": "Status", "code": 404, "reason": "NotFound"}
        view = cluster.server.kmock["get", kmock.resource(CONFIGMAPS), first_look]
        view << 404 << status

    cluster.server.call(install)
    with pytest.raises(UsageError, match="another virt-debug run began"):
        cluster.session().run(tmp_path / "out")
    assert fired
    assert cluster.server.get(CONFIGMAPS, NS, "virt-debug-vm1-record") == theirs
    assert comparable(cluster.vm()) == traced
    assert "virt-debug-vm1-hook" in cluster.ours_left()


def test_a_negative_poll_interval_is_a_usage_error(cluster, capsys):
    before = comparable(cluster.add_vm())
    code, _, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        "vm1",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--poll",
        "-1",
    )
    assert code == 2 and "Traceback" not in err
    assert comparable(cluster.vm()) == before
    assert cluster.ours_left() == []
