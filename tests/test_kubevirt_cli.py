"""The ``virt-debug kubevirt`` commands as a user runs them, against the local API
server: dry-run output is valid YAML/JSON of schema-valid objects and changes
nothing, errors are one line, and the kubectl plugin entry point works."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from kube_server import CONFIGMAPS, PODS, PVCS, PYTHON39, KubeServer
from kubevirt_fake import FakeKubeVirt, foreign_configmap, kubevirt_cr
from kubevirt_fake import example_vm as make_vm
from kubevirt_schemas import validate_kubernetes, validate_kubevirt, validate_sidecars
from virt_debug.backends.kubevirt.objects import SIDECAR_ANNOTATION
from virt_debug.cli import main as cli_main

NS = "ns1"
CLAIM = "virt-debug-vm1"
COMMANDS = ["run", "setup", "attach", "detach", "fetch", "status"]


class Env:
    def __init__(self, server: KubeServer, tmp) -> None:
        self.server = server
        self.pvc_dir = tmp / "pvc"
        self.pvc_dir.mkdir()
        self.fake = FakeKubeVirt(server, {CLAIM: self.pvc_dir}, kubevirt_cr("v1.2.1"))
        self.kubeconfig = str(server.kubeconfig(tmp / "kubeconfig", namespace=NS))
        server.put(CONFIGMAPS, NS, foreign_configmap(NS))
        self.vm = make_vm("vm1", NS, running=False)
        server.put("kubevirt.io/v1/virtualmachines", NS, self.vm)

    def ours(self) -> list[str]:
        names = self.server.names(CONFIGMAPS, NS) + self.server.names(PODS, NS)
        return [n for n in names + self.server.names(PVCS, NS) if "virt-debug" in n]


@pytest.fixture
def env(tmp_path):
    with KubeServer() as server:
        yield Env(server, tmp_path)
        assert not server.errors


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        cli_main.main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_teaches_with_examples(capsys, command):
    code, out, _ = invoke(capsys, "kubevirt", command, "--help")
    assert code == 0
    assert "Example" in out
    # status changes nothing: it has no --dry-run.
    assert ("--dry-run" in out) == (command != "status")
    assert "--context" in out


def test_dry_run_prints_valid_objects_and_changes_nothing(env, capsys):
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        "vm1",
        "--kubeconfig",
        env.kubeconfig,
        "--dry-run",
        "-o",
        "yaml",
    )
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "Pod",
        "ConfigMap",
        "VirtualMachine",
    ]
    for doc in docs:
        if doc["kind"] == "VirtualMachine":
            validate_kubevirt(doc, "v1.VirtualMachine")
            value = doc["spec"]["template"]["metadata"]["annotations"][
                SIDECAR_ANNOTATION
            ]
            sidecars = validate_sidecars(value)
            # KubeVirt v1.2 has no default shim image: ours names the cluster's.
            assert sidecars[1]["image"] == "registry.local/kubevirt/sidecar-shim:v1.2.1"
        else:
            validate_kubernetes(doc)
    assert "would action: start VM ns1/vm1" in err

    # Nothing was created or changed.
    assert env.ours() == []
    assert env.server.get("kubevirt.io/v1/virtualmachines", NS, "vm1") == env.vm
    assert env.fake.actions == []


def test_dry_run_json_is_a_list(env, capsys):
    code, out, _ = invoke(
        capsys,
        "kubevirt",
        "attach",
        "vm1",
        "--kubeconfig",
        env.kubeconfig,
        "--dry-run",
        "-o",
        "json",
    )
    assert code == 0
    listing = json.loads(out)
    assert listing["kind"] == "List"
    assert [i["kind"] for i in listing["items"]] == [
        "ConfigMap",
        "ConfigMap",
        "VirtualMachine",
    ]


def attach(env, capsys) -> None:
    for command in ("setup", "attach"):
        code, _, err = invoke(
            capsys,
            "kubevirt",
            command,
            "vm1",
            "--kubeconfig",
            env.kubeconfig,
            "--exec-local",
            f"{CLAIM}={env.pvc_dir}",
        )
        assert code == 0, err


def test_attach_before_setup_is_refused(env, capsys):
    code, _, err = invoke(
        capsys, "kubevirt", "attach", "vm1", "--kubeconfig", env.kubeconfig
    )
    assert code == 2
    assert "kubevirt setup vm1" in err


def test_detach_dry_run_shows_the_vm_without_our_sidecar(env, capsys):
    attach(env, capsys)
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "detach",
        "vm1",
        "--kubeconfig",
        env.kubeconfig,
        "--dry-run",
    )
    assert code == 0, err
    (vm,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "VirtualMachine"]
    validate_kubevirt(vm, "v1.VirtualMachine")
    original = env.vm["spec"]["template"]["metadata"]["annotations"]
    assert vm["spec"]["template"]["metadata"]["annotations"] == original
    # The dry-run left the attachment in place.
    assert "virt-debug-vm1-hook" in env.ours()


def test_missing_vm_is_one_line_and_exit_2(env, capsys):
    code, out, err = invoke(
        capsys, "kubevirt", "run", "strace", "ghost", "--kubeconfig", env.kubeconfig
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("virt-debug:")]
    assert (
        lines == [lines[0]]
        and "no VirtualMachine or VirtualMachineInstance" in lines[0]
    )
    assert "Traceback" not in err
    assert env.ours() == []


def test_run_end_to_end_through_the_cli(env, capsys, tmp_path):
    # QEMU fails to open its disk: the user sees why, from the fetched trace.
    env.fake.qemu = "fail"
    out_dir = tmp_path / "traces"
    code, out, err = invoke(
        capsys,
        "kubevirt",
        "run",
        "strace",
        "vm1",
        "--kubeconfig",
        env.kubeconfig,
        "--duration",
        "0.2s",
        "--output",
        str(out_dir),
        "--poll",
        "0.02",
        "--exec-local",
        f"{CLAIM}={env.pvc_dir}",
        "--delete-pvc",
    )
    assert code == 0, err
    assert list(out_dir.rglob("strace.log"))
    assert "hook sidecar started" in err, err
    assert "the traced start failed" in err
    assert "SyncFailed: qemu-kvm: could not open disk image" in err
    assert "Likely cause" in out
    assert "/var/run/kubevirt-private/vmi-disks/disk0/disk.img" in out
    assert env.ours() == []
    assert (
        env.server.get("kubevirt.io/v1/virtualmachines", NS, "vm1")["spec"][
            "runStrategy"
        ]
        == "Halted"
    )


def test_status_and_the_kubectl_plugin(env, capsys, monkeypatch):
    attach(env, capsys)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "kubectl-virt_debug",
            "status",
            "vm1",
            "--kubeconfig",
            env.kubeconfig,
            "-o",
            "json",
        ],
    )
    code = 0
    try:
        cli_main.kubectl_plugin()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    state = json.loads(out)
    assert state["attached"] is True
    assert state["otherSidecars"] == 1
    assert state["record"]["vm"] == "vm1"


def test_transfer_helper_runs_on_python39(env):
    # The shim image's python: the flows above ran the helper commands on it.
    probe = __import__("subprocess").run(
        [PYTHON39, "--version"], capture_output=True, text=True
    )
    assert probe.returncode == 0


@pytest.mark.parametrize(
    "command, kinds",
    [
        ("setup", ["ConfigMap", "PersistentVolumeClaim", "Pod"]),
        ("fetch", ["Pod"]),
    ],
)
def test_dry_run_of_setup_and_fetch(env, capsys, command, kinds):
    code, out, err = invoke(
        capsys, "kubevirt", command, "vm1", "--kubeconfig", env.kubeconfig, "--dry-run"
    )
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == kinds
    for doc in docs:
        validate_kubernetes(doc)
    assert env.ours() == []
