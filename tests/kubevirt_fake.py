"""A fake KubeVirt (and kubelet) behind the local API server of ``kube_server``.

``FakeKubeVirt`` plays the cluster's part, as far as the flows need it, from a task
in the server's loop (so it never races the server): it answers the VM subresources
(restart, start, stop), creates VMIs from the VM template with its annotations,
refuses hook sidecars when the Sidecar gate is off, plays kubelet for our helper
pods, and for a VMI carrying our sidecar runs the hook from the ConfigMap on a real
KubeVirt domain XML, checks the wrapper it points at was uploaded to the PVC, and
writes a real strace trace of a program failing like QEMU where the wrapper would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import kmock
import yaml

from kube_server import (
    CONFIGMAPS,
    EVENTS,
    KUBEVIRT,
    MOUNT,
    PODS,
    PYTHON39,
    SHARED,
    SUBRESOURCES,
    VM,
    VMI,
    KubeServer,
)


def kubevirt_cr(version: str = "v1.3.0", gates: list[str] | None = None) -> dict:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {
            "configuration": {
                "developerConfiguration": {
                    "featureGates": ["Sidecar"] if gates is None else gates
                }
            }
        },
        "status": {
            "observedKubeVirtVersion": version,
            "observedKubeVirtRegistry": "registry.local/kubevirt",
            "phase": "Deployed",
        },
    }


# A sidecar that is not ours: hands the domain back unchanged.
FOREIGN_HOOK = "#!/bin/sh\nprintf '%s' \"$4\"\n"


def foreign_configmap(namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "my-config-map", "namespace": namespace},
        "data": {"my_script.sh": FOREIGN_HOOK},
    }


def example_vm(name: str, namespace: str, *, running: bool = True) -> dict:
    vm = yaml.safe_load((SHARED / "vm-with-configmap-hook.yaml").read_text())
    vm["metadata"].update(name=name, namespace=namespace, resourceVersion="1")
    vm["spec"]["runStrategy"] = "Always" if running else "Halted"
    return vm


class FakeKubeVirt:
    """Just enough of virt-controller, virt-handler and kubelet for the flows."""

    def __init__(self, server: KubeServer, volumes: dict[str, Path], cr: dict) -> None:
        self.server = server
        self.volumes = volumes
        self.cr = cr
        self.node = "node-1"
        # What the traced QEMU does: "start" (runs), "fail" (exits at once).
        self.qemu = "start"
        # Whether a guest with our hook shuts itself down once it runs.
        self.guest_stops = False
        self.hook_calls: list[str] = []
        self.actions: list[str] = []
        self.on_action: dict[str, Any] = {}
        mock = server.kmock
        for action in ("restart", "start", "stop"):
            mock["put", SUBRESOURCES, kmock.subresource(action)] << self._handler(
                action
            )
        mock["get", kmock.resource(PODS), kmock.subresource("log")] << self._log
        # Container logs by (pod, container), as virt-launcher writes them.
        self.logs: dict[tuple[str, str], str] = {}
        server.put(KUBEVIRT, "kubevirt", cr)
        server.ticks.append(self.tick)

    def _log(self, request: kmock.Request) -> bytes:
        container = request.params.get("container", "")
        return self.logs.get((request.name, container), "").encode()

    @property
    def objects(self):
        return self.server.kmock.objects

    def find(self, resource: str, namespace: str, name: str):
        """The live object, or None (kmock keys need resource objects)."""
        key = (kmock.resource(resource), namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    def _handler(self, action: str):
        def handle(request: kmock.Request) -> dict:
            self.actions.append(action)
            vm_obj = self.find(VM, request.namespace, request.name)
            if vm_obj is None:
                raise kmock.KubernetesNotFoundError()
            hook = self.on_action.get(action)
            if hook:
                hook()
            if action in ("restart", "stop"):
                self._stop_vmi(request.namespace, request.name)
            if action == "start":
                vm_obj.patch({"spec": {"runStrategy": "Always"}})
            if action == "stop":
                vm_obj.patch({"spec": {"runStrategy": "Halted"}})
            if action in ("restart", "start"):
                self._create_vmi(vm_obj.raw)
            return {}

        return handle

    def _stop_vmi(self, namespace: str, name: str) -> None:
        vmi = self.find(VMI, namespace, name)
        if vmi is not None:
            uid = vmi["metadata"]["uid"]
            vmi.delete()
            for pod_key, pod in list(self.objects.items()):
                if pod_key[0] == PODS and not pod.deleted:
                    labels = pod.get("metadata", {}).get("labels", {})
                    if labels.get("kubevirt.io/created-by") == uid:
                        pod.delete()

    def _create_vmi(self, vm: dict) -> None:
        meta, template = vm["metadata"], vm["spec"]["template"]
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        vmi = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "annotations": annotations,
                "ownerReferences": [{"kind": "VirtualMachine", "name": meta["name"]}],
            },
            "spec": template.get("spec", {}),
            "status": {"phase": "Pending"},
        }
        sidecars = annotations.get("hooks.kubevirt.io/hookSidecars")
        cr = self.find(KUBEVIRT, "kubevirt", "kubevirt").raw
        gates = cr["spec"]["configuration"]["developerConfiguration"]["featureGates"]
        if sidecars and "Sidecar" not in gates:
            # Admission refuses the VMI; the VM controller records why.
            self._event(
                vm,
                "FailedCreate",
                "Error creating VirtualMachineInstance: "
                "admission webhook denied the request: sidecar feature gate "
                "is not enabled in kubevirt-config",
            )
            return
        self.objects[(VMI, meta["namespace"], meta["name"])] = vmi

    def _event(self, obj: dict, reason: str, message: str) -> None:
        meta = obj["metadata"]
        name = f"{meta['name']}.{uuid.uuid4().hex[:8]}"
        self.objects[(EVENTS, meta["namespace"], name)] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {"kind": obj.get("kind"), "name": meta["name"]},
            "type": "Warning",
            "reason": reason,
            "message": message,
        }

    # The controllers' loop.

    def tick(self) -> None:
        for key, obj in list(self.objects.items()):
            if obj.deleted:
                continue
            if key[0] == PODS:
                self._kubelet(obj)
            elif key[0] == VMI:
                self._advance(obj)

    def _kubelet(self, pod) -> None:
        labels = pod.get("metadata", {}).get("labels", {})
        if labels.get("virt-debug/role") == "helper" and "status" not in pod:
            pod.patch({"status": {"phase": "Running"}})

    def _advance(self, vmi) -> None:
        if not vmi.get("metadata", {}).get("uid"):
            # A VMI created through the API (a standalone one): admit it.
            vmi.patch(
                {"metadata": {"uid": str(uuid.uuid4())}, "status": {"phase": "Pending"}}
            )
        phase = vmi["status"]["phase"]
        annotations = vmi.raw.get("metadata", {}).get("annotations") or {}
        hooked = "virt-debug" in json.dumps(annotations)
        if phase == "Running" and self.guest_stops and hooked:
            vmi.patch({"status": {"phase": "Succeeded"}})
        elif phase == "Pending":
            vmi.patch({"status": {"phase": "Scheduling"}})
        elif phase == "Scheduling":
            self._launcher_pod(vmi.raw)
            vmi.patch({"status": {"phase": "Scheduled", "nodeName": self.node}})
        elif phase == "Scheduled":
            problem = self._define_domain(vmi.raw)
            if problem:
                vmi.patch(
                    {
                        "status": {
                            "phase": "Failed",
                            "conditions": [
                                {
                                    "type": "Synchronized",
                                    "status": "False",
                                    "reason": "SyncFailed",
                                    "message": problem,
                                }
                            ],
                        }
                    }
                )
                self._event(vmi.raw, "SyncFailed", problem)
                self._launcher_log(vmi.raw, problem)
            else:
                vmi.patch({"status": {"phase": "Running"}})

    def _launcher_log(self, vmi: dict, problem: str) -> None:
        uid = vmi["metadata"]["uid"]
        for (_, _ns, name), pod in list(self.objects.items()):
            labels = (
                pod.get("metadata", {}).get("labels", {}) if not pod.deleted else {}
            )
            if labels.get("kubevirt.io/created-by") == uid:
                entries = [
                    {
                        "component": "virt-launcher",
                        "level": "info",
                        "msg": "Domain defined.",
                    },
                    {
                        "component": "virt-launcher",
                        "level": "error",
                        "msg": "Failed to start VirtualMachineInstance with flags 0.",
                        "reason": f"virError(Code=1, Domain=10, Message='{problem}')",
                    },
                ]
                text = "".join(json.dumps(e) + "\n" for e in entries)
                self.logs[(name, "compute")] = text

    def _launcher_pod(self, vmi: dict) -> None:
        meta = vmi["metadata"]
        sidecars = json.loads(
            meta.get("annotations", {}).get("hooks.kubevirt.io/hookSidecars", "[]")
        )
        volumes = [
            {
                "name": f"hook-pvc-{i}",
                "persistentVolumeClaim": {"claimName": s["pvc"]["name"]},
            }
            for i, s in enumerate(sidecars)
            if "pvc" in s
        ]
        containers = ["compute"] + [f"hook-sidecar-{i}" for i in range(len(sidecars))]
        name = f"virt-launcher-{meta['name']}-{uuid.uuid4().hex[:5]}"
        self.objects[(PODS, meta["namespace"], name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {
                    "kubevirt.io/created-by": meta["uid"],
                    "kubevirt.io": "virt-launcher",
                },
            },
            "spec": {
                "nodeName": self.node,
                "volumes": volumes,
                "containers": [{"name": c, "image": "x"} for c in containers],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": c,
                        "state": {"running": {"startedAt": "2026-12-03T10:15:00Z"}},
                    }
                    for c in containers
                ],
            },
        }

    def _define_domain(self, vmi: dict) -> str:
        """virt-launcher's part: run each hook, then start the emulator it names."""
        meta = vmi["metadata"]
        sidecars = json.loads(
            meta.get("annotations", {}).get("hooks.kubevirt.io/hookSidecars", "[]")
        )
        domain = (SHARED / "domains" / "converter-x86_64.xml").read_text()
        for sidecar in sidecars:
            cm_ref = sidecar.get("configMap") or {}
            cm = self.find(CONFIGMAPS, meta["namespace"], cm_ref.get("name"))
            if cm is None:
                return f"hook ConfigMap {cm_ref.get('name')} not found"
            result = self._run_hook(cm["data"][cm_ref["key"]], vmi, domain)
            self.hook_calls.append(cm_ref["name"])
            if result.returncode != 0:
                return f"hook failed: {result.stderr.strip()}"
            domain = result.stdout
        emulator = (
            domain.split("<emulator>")[1].split("</emulator>")[0]
            if ("<emulator>" in domain)
            else "/usr/libexec/qemu-kvm"
        )
        if not emulator.startswith(MOUNT):
            return ""
        return self._launch_wrapped(sidecars, emulator)

    def _run_hook(self, script: str, vmi: dict, domain: str):
        # As the shim does: the ConfigMap's file, executable, with its shebang; python
        # hooks run on python3.9, the sidecar-shim's python.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "onDefineDomain"
            path.write_text(script)
            path.chmod(0o755)
            first = script.splitlines()[0] if script else ""
            argv = [PYTHON39, str(path)] if "python" in first else [str(path)]
            return subprocess.run(
                [*argv, "--vmi", json.dumps(vmi), "--domain", domain],
                capture_output=True,
                text=True,
                timeout=60,
            )

    def _launch_wrapped(self, sidecars: list, emulator: str) -> str:
        claim = next(s["pvc"]["name"] for s in sidecars if "pvc" in s)
        root = self.volumes[claim]
        wrapper = root / emulator[len(MOUNT) + 1 :]
        if not wrapper.is_file() or not wrapper.stat().st_mode & 0o111:
            return f"exec {emulator}: no such file (the tools were not uploaded)"
        output = next(
            line.split("=", 1)[1]
            for line in wrapper.read_text().splitlines()
            if line.startswith("OUTPUT=")
        )
        launch = root / output[len(MOUNT) + 1 :] / "20261203-101500-42"
        launch.mkdir(parents=True)
        # A real trace of a program failing like QEMU with a missing disk.
        program = (
            "import sys; open('/var/run/kubevirt-private/vmi-disks/disk0/disk.img'); "
        )
        program += "sys.exit(0)"
        if self.qemu != "fail":
            program = "import time; time.sleep(0.01)"
        strace = shutil.which("strace")
        if strace:
            subprocess.run(
                [
                    strace,
                    "-f",
                    "-tt",
                    "-o",
                    str(launch / "strace.log"),
                    PYTHON39,
                    "-c",
                    program,
                ],
                capture_output=True,
            )
        else:
            (launch / "strace.log").write_text("")
        (launch / "status").write_text(
            "exit 1\n" if self.qemu == "fail" else "exit 0\n"
        )
        (launch / "argv").write_bytes(b"/usr/libexec/qemu-kvm\0-name\0guest=ns_vm\0")
        (launch / "wrapper.log").write_text("launched under strace\n")
        return "qemu-kvm: could not open disk image" if self.qemu == "fail" else ""
