"""The KubeVirt backend on a real cluster: opt-in, see README.md beside this file.

Skipped unless VIRT_DEBUG_KUBECONFIG names a kubeconfig of a cluster with KubeVirt
(v1.2.0+, Sidecar feature gate on) where the tests may create a namespace.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt import objects as o
from virt_debug.backends.kubevirt import preflight
from virt_debug.backends.kubevirt.client import Connection, connect
from virt_debug.backends.kubevirt.flow import Options, Session
from virt_debug.backends.kubevirt.transport import KubeExec

KUBECONFIG = os.environ.get("VIRT_DEBUG_KUBECONFIG")
CONTEXT = os.environ.get("VIRT_DEBUG_CONTEXT") or None
DISK = os.environ.get(
    "VIRT_DEBUG_TEST_DISK", "quay.io/kubevirt/cirros-container-disk-demo:latest"
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(not KUBECONFIG, reason="set VIRT_DEBUG_KUBECONFIG to run"),
]


@pytest.fixture(scope="module")
def kube():
    return connect(Connection(kubeconfig=KUBECONFIG, context=CONTEXT))


@pytest.fixture
def namespace(kube):
    name = f"virt-debug-e2e-{secrets.token_hex(3)}"
    kube.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


def small_vm(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}}]
                        },
                        "resources": {"requests": {"memory": "128Mi"}},
                    },
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [{"name": "root", "containerDisk": {"image": DISK}}],
                },
            },
        },
    }


def wait_running(kube, namespace: str, name: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vmi = kube.get(api.kubevirt(namespace, "virtualmachineinstances", name))
        if ((vmi or {}).get("status") or {}).get("phase") == "Running":
            return
        time.sleep(2)
    raise AssertionError(f"VM {name} did not run within {timeout}s")


def test_preflight_reads_kubevirt(kube, namespace):
    kube.create(api.kubevirt(namespace, "virtualmachines"), small_vm("pre", namespace))
    pre = preflight.inspect(kube, "pre", namespace)
    assert pre.version is not None
    assert pre.gate_on, "turn the Sidecar gate on (see tests/cluster/README.md)"


def test_our_manifests_pass_server_side_dry_run(kube, namespace):
    manifests = [
        o.pvc("virt-debug-x", namespace, "x"),
        o.hook_configmap("virt-debug-x-hook", namespace, "x", "#!/bin/sh\n"),
        o.helper_pod(
            "virt-debug-x-helper-1",
            namespace,
            "x",
            image="busybox",
            claim="virt-debug-x",
        ),
    ]
    plural = {
        "PersistentVolumeClaim": "persistentvolumeclaims",
        "ConfigMap": "configmaps",
        "Pod": "pods",
    }
    for manifest in manifests:
        kube.request(
            "POST",
            api.core(namespace, plural[manifest["kind"]]),
            manifest,
            query={"dryRun": "All"},
        )


def test_run_traces_a_real_vm_and_restores_it(kube, namespace, tmp_path: Path):
    kube.create(
        api.kubevirt(namespace, "virtualmachines"), small_vm("traced", namespace)
    )
    wait_running(kube, namespace, "traced")
    before = kube.get(api.kubevirt(namespace, "virtualmachines", "traced"))

    lines: list[str] = []
    session = Session(
        kube,
        KubeExec(kube),
        "traced",
        namespace,
        Options(duration=20, delete_pvc=True),
        lines.append,
    )
    _, dest = session.run(tmp_path / "out")

    assert session.outcome.running, "\n".join(lines)
    argv = list(dest.rglob("argv"))
    assert argv, "no launch traced; progress:\n" + "\n".join(lines)
    assert b"qemu-kvm" in argv[0].read_bytes()
    assert (argv[0].parent / "strace.log").stat().st_size > 0

    after = kube.get(api.kubevirt(namespace, "virtualmachines", "traced"))
    annotations = after["spec"]["template"].get("metadata", {}).get("annotations", {})
    assert o.SIDECAR_ANNOTATION not in annotations
    assert after["spec"].get("runStrategy") == before["spec"].get("runStrategy")
    leftovers = [
        item["metadata"]["name"]
        for plural in ("configmaps", "pods", "persistentvolumeclaims")
        for item in kube.list(api.core(namespace, plural))
        if item["metadata"]["name"].startswith("virt-debug-")
    ]
    assert leftovers == []
