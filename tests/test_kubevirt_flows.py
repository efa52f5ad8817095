"""The KubeVirt flows against a local API server over real HTTP (kmock), with the
archive transfer running for real as local processes on both ends."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kube_server import CONFIGMAPS, KUBEVIRT, PODS, PVCS, PYTHON39, VM, KubeServer
from kubevirt_fake import FakeKubeVirt, example_vm, foreign_configmap, kubevirt_cr
from virt_debug.backends.kubevirt.client import Connection, connect
from virt_debug.backends.kubevirt.flow import Options, Session
from virt_debug.backends.kubevirt.objects import SIDECAR_ANNOTATION
from virt_debug.backends.kubevirt.transport import KubeExec, LocalExec
from virt_debug.errors import Interrupted, KubernetesError, UsageError

NS = "ns1"
CLAIM = "virt-debug-vm1"


class Cluster:
    def __init__(self, server: KubeServer, tmp: Path, cr: dict) -> None:
        self.server = server
        self.pvc_dir = tmp / "pvc"
        self.pvc_dir.mkdir(exist_ok=True)
        self.fake = FakeKubeVirt(server, {CLAIM: self.pvc_dir}, cr)
        self.kubeconfig = server.kubeconfig(tmp / "kubeconfig", namespace=NS)
        self.kube = connect(Connection(kubeconfig=str(self.kubeconfig)))
        self.exec = LocalExec(self.kube, {CLAIM: self.pvc_dir}, python=PYTHON39)
        self.lines: list[str] = []
        server.put(CONFIGMAPS, NS, foreign_configmap(NS))

    def add_vm(self, name="vm1", *, running=True, foreign=True) -> dict:
        vm = example_vm(name, NS, running=running)
        if not foreign:
            del vm["spec"]["template"]["metadata"]["annotations"]
        self.server.put(VM, NS, vm)
        if running:
            self.kube.put(
                f"/apis/subresources.kubevirt.io/v1/namespaces/{NS}"
                f"/virtualmachines/{name}/start"
            )
            self.fake.actions.clear()
            self.wait(lambda: self.vmi_phase(name) == "Running")
        return vm

    def session(self, vm: str = "vm1", **options) -> Session:
        settings = dict(poll=0.02, duration=0.2, stop_timeout=10, start_timeout=20)
        opts = Options(**(settings | options))
        return Session(self.kube, self.exec, vm, NS, opts, self.lines.append)

    def attached(self, vm: str = "vm1", **options) -> Session:
        session = self.session(vm, **options)
        session.setup()
        session.attach()
        return session

    def vm(self, name: str = "vm1") -> dict:
        return self.server.get(VM, NS, name)

    def annotation(self, name: str = "vm1") -> str | None:
        annotations = self.vm(name)["spec"]["template"]["metadata"].get("annotations")
        return (annotations or {}).get(SIDECAR_ANNOTATION)

    def vmi_phase(self, name: str = "vm1") -> str | None:
        vmi = self.server.get("kubevirt.io/v1/virtualmachineinstances", NS, name)
        return (vmi or {}).get("status", {}).get("phase")

    def ours_left(self) -> list[str]:
        """Objects of ours still there, the PVC aside."""
        return [
            n
            for n in self.server.names(CONFIGMAPS, NS) + self.server.names(PODS, NS)
            if n.startswith("virt-debug-")
        ]

    def wait(self, condition, tries: int = 500) -> None:
        import time

        for _ in range(tries):
            if condition():
                return
            time.sleep(0.01)
        raise AssertionError("condition not reached")


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "pvc").mkdir()
    with KubeServer({CLAIM: tmp_path / "pvc"}) as server:
        yield Cluster(server, tmp_path, kubevirt_cr("v1.3.0"))
        assert not server.errors, server.errors


@pytest.mark.parametrize("transport", ["local-process", "exec-v5", "exec-v4"])
def test_run_traces_the_next_start_and_restores_the_vm(cluster, tmp_path, transport):
    if transport.startswith("exec-"):
        # The real-cluster path: kubernetes.stream over the API server's exec socket;
        # v4 (before Kubernetes 1.30) cannot close stdin, v5 can.
        protocol = f"{transport[-2:]}.channel.k8s.io"
        cluster.server.call(
            setattr, cluster.server.kmock, "exec_protocols", (protocol,)
        )
        cluster.exec = KubeExec(cluster.kube, poll=0.05)
    before = cluster.add_vm()
    original = before["spec"]["template"]["metadata"]["annotations"][SIDECAR_ANNOTATION]

    session = cluster.session()
    planned, dest = session.run(tmp_path / "out")

    # The traced start really ran our hook and the uploaded wrapper.
    assert planned == []
    assert session.outcome.running
    assert "virt-debug-vm1-hook" in cluster.fake.hook_calls
    assert cluster.fake.actions == ["restart", "restart"]
    wrapper = cluster.pvc_dir / "vms" / "vm1" / "qemu-kvm-wrapper"
    assert os.access(wrapper, os.X_OK)
    assert (cluster.pvc_dir / "tools" / "bin" / "strace").exists()

    # Two uploads (bundle, then wrapper and hook) and one fetch, through the seam.
    calls = (
        cluster.exec.calls
        if transport == "local-process"
        else (cluster.server.call(lambda: list(cluster.server.kmock.exec_calls)))
    )
    assert len(calls) == 3

    # The traces came back through the helper's fetch command.
    launches = [p for p in dest.rglob("argv")]
    assert len(launches) == 1
    assert (launches[0].parent / "strace.log").exists()

    # Nothing of ours is left but the PVC; the annotation is the very same text.
    assert cluster.annotation() == original
    assert cluster.ours_left() == []
    assert cluster.server.names(PVCS, NS) == [CLAIM]
    assert cluster.vmi_phase() == "Running"
    assert any("domain defined" in line for line in cluster.lines)


def test_detach_after_a_run_removes_the_pvc_on_request(cluster, tmp_path):
    cluster.add_vm()
    cluster.session().run(tmp_path / "out")
    assert cluster.server.names(PVCS, NS) == [CLAIM]
    cluster.session(delete_pvc=True).detach()
    assert cluster.server.names(PVCS, NS) == []
    assert cluster.ours_left() == []


def test_run_of_a_stopped_vm_starts_then_stops_it(cluster, tmp_path):
    cluster.add_vm(running=False)
    cluster.session(delete_pvc=True).run(tmp_path / "out")

    assert cluster.fake.actions == ["start", "stop"]
    assert cluster.vm()["spec"]["runStrategy"] == "Halted"
    assert cluster.server.names(PVCS, NS) == []
    assert cluster.ours_left() == []


def test_failed_start_is_explained_and_restored(cluster, tmp_path):
    cluster.add_vm()
    cluster.fake.qemu = "fail"
    session = cluster.session()
    _, dest = session.run(tmp_path / "out")

    assert not session.outcome.running
    text = "\n".join(cluster.lines)
    assert "could not open disk image" in text
    assert "SyncFailed" in text
    assert "compute log: Failed to start VirtualMachineInstance with flags 0." in text
    assert list(dest.rglob("strace.log"))
    assert cluster.ours_left() == []
    assert json.loads(cluster.annotation())[0]["configMap"]["name"] == "my-config-map"


def test_attach_twice_changes_nothing_and_detach_keeps_the_foreign_sidecar(cluster):
    before = cluster.add_vm()
    original = before["spec"]["template"]["metadata"]["annotations"][SIDECAR_ANNOTATION]

    cluster.attached()
    once = cluster.annotation()
    patches = count_vm_patches(cluster)
    cluster.session().attach()
    assert cluster.annotation() == once
    assert count_vm_patches(cluster) == patches

    sidecars = json.loads(once)
    assert [s["configMap"]["name"] for s in sidecars] == [
        "my-config-map",
        "virt-debug-vm1-hook",
    ]

    cluster.session().detach()
    assert cluster.annotation() == original
    assert cluster.ours_left() == []


def count_vm_patches(cluster) -> int:
    def count():
        return sum(
            1
            for r in cluster.server.kmock._requests
            if r.method.value == "PATCH" and r.resource == VM
        )

    return cluster.server.call(count)


def test_detach_undoes_a_crashed_run_from_the_cluster_record(cluster):
    cluster.add_vm()
    # A first process attaches and restarts, then dies without restoring.
    cluster.session().setup()
    cluster.session().attach(restart=True)
    assert "virt-debug-vm1-record" in cluster.server.names(CONFIGMAPS, NS)
    assert "virt-debug-vm1-hook" in cluster.annotation()

    # A new process finds the record and undoes it all, restart included.
    cluster.fake.actions.clear()
    cluster.session().detach()
    assert "virt-debug" not in cluster.annotation()
    assert cluster.fake.actions == ["restart"]
    assert cluster.ours_left() == []


def test_a_second_run_refuses_while_a_record_is_there(cluster):
    cluster.add_vm()
    cluster.attached()
    with pytest.raises(UsageError, match="detach vm1"):
        cluster.session().run()


def test_sidecar_gate_off_says_how_to_turn_it_on_and_changes_nothing(tmp_path):
    with KubeServer() as server:
        cr = kubevirt_cr("v1.3.0", gates=["LiveMigration"])
        cluster = Cluster(server, tmp_path, cr)
        before = cluster.add_vm(foreign=False)
        with pytest.raises(KubernetesError) as caught:
            cluster.session().run(tmp_path / "out")
        message = str(caught.value)
        assert "Sidecar feature gate is off" in message
        assert "kubectl patch kubevirt kubevirt -n kubevirt --type merge" in message
        assert '"featureGates":["LiveMigration","Sidecar"]' in message
        assert "--enable-sidecar-gate" in message
        assert cluster.vm() == before
        assert cluster.ours_left() == []


def test_enable_sidecar_gate_turns_it_on_for_the_run_only(tmp_path):
    with KubeServer() as server:
        cr = kubevirt_cr("v1.3.0", gates=["LiveMigration"])
        cluster = Cluster(server, tmp_path, cr)
        cluster.add_vm(foreign=False)
        seen = []
        cluster.fake.on_action["restart"] = lambda: seen.append(
            cluster.fake.find(KUBEVIRT, "kubevirt", "kubevirt").raw
        )
        cluster.session(enable_sidecar_gate=True).run(tmp_path / "out")
        gates = seen[0]["spec"]["configuration"]["developerConfiguration"][
            "featureGates"
        ]
        assert gates == ["LiveMigration", "Sidecar"]
        after = server.get(KUBEVIRT, "kubevirt", "kubevirt")
        assert after["spec"]["configuration"]["developerConfiguration"][
            "featureGates"
        ] == ["LiveMigration"]


def test_missing_vm_is_a_clear_error(cluster):
    with pytest.raises(UsageError, match="no VirtualMachine or VirtualMachineInstance"):
        cluster.session("nope").run()
    assert cluster.ours_left() == []


def test_too_old_kubevirt_is_refused(tmp_path):
    with KubeServer() as server:
        cluster = Cluster(server, tmp_path, kubevirt_cr("v1.1.1"))
        cluster.add_vm()
        with pytest.raises(KubernetesError, match="v1.2.0"):
            cluster.session().setup()


def test_failure_midway_restores_everything(cluster, tmp_path):
    before = cluster.add_vm()

    def refuse():
        import kmock

        raise kmock.KubernetesError(
            status=500, reason="InternalError", message="virt-api is down"
        )

    cluster.fake.on_action["restart"] = refuse
    with pytest.raises(KubernetesError, match="virt-api is down"):
        cluster.session().run(tmp_path / "out")
    assert (
        cluster.annotation()
        == before["spec"]["template"]["metadata"]["annotations"][SIDECAR_ANNOTATION]
    )
    assert cluster.ours_left() == []


def test_interrupt_midway_restores_everything(cluster, tmp_path):
    before = cluster.add_vm()
    # Ctrl-C arrives while the VM restarts with the hook.
    cluster.fake.on_action["restart"] = lambda: os.kill(os.getpid(), signal.SIGINT)
    cluster.fake.on_action["restart"] = _once(cluster.fake.on_action["restart"])
    with pytest.raises(Interrupted):
        cluster.session().run(tmp_path / "out")
    assert (
        cluster.annotation()
        == before["spec"]["template"]["metadata"]["annotations"][SIDECAR_ANNOTATION]
    )
    assert cluster.ours_left() == []
    # Restarted into the hook, then back out of it.
    assert cluster.fake.actions == ["restart", "restart"]


def _once(fn):
    done = []

    def call():
        if not done:
            done.append(True)
            fn()

    return call


def test_standalone_vmi_needs_recreate_flag(cluster):
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "lonely", "namespace": NS, "uid": "u1"},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": "Running"},
    }
    cluster.server.put("kubevirt.io/v1/virtualmachineinstances", NS, vmi)
    with pytest.raises(UsageError, match="--recreate-vmi"):
        cluster.session("lonely", claim=CLAIM).run()
    assert cluster.ours_left() == []
    after = cluster.server.get("kubevirt.io/v1/virtualmachineinstances", NS, "lonely")
    assert after["metadata"]["uid"] == "u1"


def test_standalone_vmi_is_recreated_with_the_hook_and_back(cluster):
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "lonely", "namespace": NS, "labels": {"app": "x"}},
        "spec": {"domain": {"devices": {}}},
    }
    cluster.kube.create(
        "/apis/kubevirt.io/v1/namespaces/ns1/virtualmachineinstances", vmi
    )
    cluster.wait(lambda: cluster.vmi_phase("lonely") == "Running")

    session = cluster.session("lonely", recreate_vmi=True, claim=CLAIM)
    session.setup()
    session.attach(restart=True)
    assert session.outcome.running
    traced = cluster.server.get("kubevirt.io/v1/virtualmachineinstances", NS, "lonely")
    assert (
        "virt-debug-lonely-hook"
        in traced["metadata"]["annotations"][SIDECAR_ANNOTATION]
    )

    cluster.session("lonely", delete_pvc=True).detach()
    back = cluster.server.get("kubevirt.io/v1/virtualmachineinstances", NS, "lonely")
    assert SIDECAR_ANNOTATION not in back["metadata"].get("annotations", {})
    assert back["metadata"]["labels"] == {"app": "x"}
    assert back["metadata"]["uid"] != traced["metadata"]["uid"]
    assert cluster.ours_left() == []


def test_until_stopped_waits_for_the_guest_then_restores(cluster, tmp_path):
    cluster.add_vm()
    cluster.fake.guest_stops = True
    session = cluster.session(until_stopped=True, duration=None)
    _, dest = session.run(tmp_path / "out")
    assert any("until the guest stops" in line for line in cluster.lines)
    assert list(dest.rglob("argv"))
    assert cluster.fake.actions == ["restart", "restart"]
    assert cluster.ours_left() == []


def test_fetch_without_a_run_leaves_nothing_behind(cluster, tmp_path):
    cluster.add_vm()
    cluster.session().run(tmp_path / "first")
    # Later, the traces of every run are still on the PVC.
    _, dest = cluster.session().fetch(tmp_path / "again")
    assert len(list(dest.rglob("argv"))) == 1
    assert cluster.ours_left() == []


def test_a_vm_changed_meanwhile_is_read_again_not_overwritten(cluster, tmp_path):
    cluster.add_vm()
    mock = cluster.server.kmock
    bumped = []

    def controller_updates_the_vm(request):
        # Between our read and our patch, KubeVirt's controller writes the VM.
        if request.resource == VM and not bumped:
            vm = mock.objects[request.resource, request.namespace, request.name]
            vm.patch({"metadata": {"resourceVersion": "41"}, "spec": {"x": 1}})
            bumped.append(True)

    cluster.server.call(mock.before_patch.append, controller_updates_the_vm)
    cluster.session().run(tmp_path / "out")
    assert bumped
    # Attach: refused (409), read again, patched; restore: patched.
    assert count_vm_patches(cluster) == 3
    assert cluster.vm()["spec"]["x"] == 1
    assert cluster.ours_left() == []
    assert "virt-debug" not in cluster.annotation()


def test_run_goes_on_from_a_setup(cluster, tmp_path):
    cluster.add_vm()
    cluster.session().setup()
    _, dest = cluster.session().run(tmp_path / "out")
    assert list(dest.rglob("argv"))
    assert cluster.ours_left() == []
