"""The manifests we create or patch: valid against the real schemas, and the merge
logic of the hookSidecars annotation: foreign sidecars kept, idempotent, exact restore.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubevirt_schemas import (
    SWAGGER,
    validate_kubernetes,
    validate_kubevirt,
    validate_sidecars,
)
from virt_debug.backends.kubevirt import objects as o
from virt_debug.backends.kubevirt import preflight as p

EXAMPLE_VM = SWAGGER.parent / "vm-with-configmap-hook.yaml"
FOREIGN = json.loads(
    yaml.safe_load(EXAMPLE_VM.read_text())["spec"]["template"]["metadata"][
        "annotations"
    ][o.SIDECAR_ANNOTATION]
)[0]


def example_vm() -> dict:
    return yaml.safe_load(Path(EXAMPLE_VM).read_text())


def entry(image: str | None = None) -> dict:
    return o.sidecar_entry(
        configmap="virt-debug-vm1-hook",
        claim="virt-debug-vm1",
        hook_version="v1alpha3",
        image=image,
    )


def test_pvc_validates_with_every_option():
    validate_kubernetes(o.pvc("virt-debug-vm1", "ns", "vm1"))
    manifest = o.pvc(
        "c", "ns", "vm1", size="5Gi", storage_class="fast", access_mode="ReadWriteMany"
    )
    validate_kubernetes(manifest)
    assert manifest["spec"]["storageClassName"] == "fast"


def test_configmaps_validate():
    validate_kubernetes(o.hook_configmap("virt-debug-vm1-hook", "ns", "vm1", "#!x\n"))
    validate_kubernetes(o.record_configmap("r", "ns", "vm1", {"vm": "vm1"}))


@pytest.mark.parametrize("node", [None, "node-a"])
def test_helper_pod_validates_and_is_restricted(node):
    pod = o.helper_pod(
        "virt-debug-vm1-helper-abcde", "ns", "vm1", image="i:1", claim="c", node=node
    )
    validate_kubernetes(pod)

    # Pod Security "restricted": uid 107, non-root, no escalation, no capabilities.
    spec = pod["spec"]
    assert spec["securityContext"]["fsGroup"] == 107
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]["securityContext"]
    assert container == {
        "runAsUser": 107,
        "runAsGroup": 107,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec.get("nodeName") == node
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "c"
    assert spec["containers"][0]["volumeMounts"][0]["mountPath"] == o.MOUNT_PATH


def test_long_vm_names_give_valid_names():
    vm = "a" * 70
    name = o.Names(vm).helper_pod("abcde")
    assert len(name) <= 63
    validate_kubernetes(o.helper_pod(name, "ns", vm, image="i", claim="c"))


@pytest.mark.parametrize("image", [None, "quay.io/kubevirt/sidecar-shim:v1.2.0"])
def test_vm_after_attach_validates_against_kubevirt_openapi(image):
    vm = example_vm()
    current = o.template_annotations(vm)[o.SIDECAR_ANNOTATION]
    value = o.merge_sidecar(current, entry(image), "virt-debug-vm1-hook")
    after = o.apply_merge_patch(vm, o.annotation_patch(value, "123"))

    validate_kubevirt(after, "v1.VirtualMachine")
    sidecars = validate_sidecars(o.template_annotations(after)[o.SIDECAR_ANNOTATION])
    assert sidecars[0] == FOREIGN
    ours = sidecars[1]
    assert ours["configMap"] == {
        "name": "virt-debug-vm1-hook",
        "key": "onDefineDomain",
        "hookPath": "/usr/bin/onDefineDomain",
    }
    assert ours["pvc"]["sharedComputePath"] == o.MOUNT_PATH
    assert ours["args"] == ["--version", "v1alpha3"]
    assert ("image" in ours) == (image is not None)
    assert after["metadata"]["resourceVersion"] == "123"


def test_attaching_twice_changes_nothing():
    once = o.merge_sidecar(None, entry(), "virt-debug-vm1-hook")
    twice = o.merge_sidecar(once, entry(), "virt-debug-vm1-hook")
    assert twice == once
    assert len(json.loads(once)) == 1


def test_attach_replaces_a_stale_entry_of_ours_in_place():
    stale = json.dumps([{**entry(), "args": ["--version", "v1alpha2"]}, FOREIGN])
    value = json.loads(o.merge_sidecar(stale, entry(), "virt-debug-vm1-hook"))
    assert value == [entry(), FOREIGN]


def test_detach_keeps_foreign_sidecars_and_restores_exact_text():
    # Odd spacing on purpose: restore must give the very same text back.
    before = (
        '[ {"args": ["--version", "v1alpha2"], "configMap": {"name": "my-config-map",'
    )
    before += ' "key": "my_script.sh", "hookPath": "/usr/bin/onDefineDomain"}} ]'
    attached = o.merge_sidecar(before, entry(), "virt-debug-vm1-hook")
    assert o.remove_sidecar(attached, "virt-debug-vm1-hook", before) == before

    # Without the record, the foreign sidecar stays and ours goes.
    left = json.loads(o.remove_sidecar(attached, "virt-debug-vm1-hook"))
    assert left == [FOREIGN]


def test_detach_removes_the_annotation_when_only_ours_was_there():
    attached = o.merge_sidecar(None, entry(), "virt-debug-vm1-hook")
    assert o.remove_sidecar(attached, "virt-debug-vm1-hook") is None
    patch = o.annotation_patch(None)
    vm = o.apply_merge_patch(example_vm(), o.annotation_patch(attached))
    vm = o.apply_merge_patch(vm, patch)
    assert o.SIDECAR_ANNOTATION not in o.template_annotations(vm)
    validate_kubevirt(vm, "v1.VirtualMachine")


def test_detach_of_an_annotation_without_us_changes_nothing():
    text = json.dumps([FOREIGN])
    assert o.remove_sidecar(text, "virt-debug-vm1-hook") == text


def test_broken_annotation_is_reported():
    with pytest.raises(ValueError, match="not valid JSON"):
        o.merge_sidecar("[{", entry(), "x")


def test_feature_gate_patch_validates_and_keeps_other_gates():
    cr = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": ["A"]}}},
    }
    after = o.apply_merge_patch(cr, o.feature_gate_patch(p.feature_gates(cr)))
    validate_kubevirt(after, "v1.KubeVirt")
    assert p.feature_gates(after) == ["A", "Sidecar"]
    command = p.gate_command(cr)
    assert command.startswith(
        "kubectl patch kubevirt kubevirt -n kubevirt --type merge"
    )
    assert '"featureGates":["A","Sidecar"]' in command


@pytest.mark.parametrize(
    "text, image_needed, refused",
    [
        ("v1.1.1", True, True),
        ("v1.2.0", True, False),
        ("v1.2.2", True, False),
        ("v1.3.0", False, False),
        ("v1.6.0-rc.1", False, False),
        (None, False, False),
    ],
)
def test_versions(text, image_needed, refused):
    version = p.parse_version(text)
    assert p.needs_image(version) is image_needed
    assert p.hook_version(version) == "v1alpha3"
    if refused:
        with pytest.raises(Exception, match="v1.2.0"):
            p.check_version(version)
    else:
        p.check_version(version)


def test_shim_image_follows_the_launcher_registry_and_tag():
    cr = {
        "status": {
            "observedKubeVirtRegistry": "registry.example:5000/kubevirt",
            "observedKubeVirtVersion": "v1.2.1",
        }
    }
    assert (
        p.sidecar_shim_image(cr) == "registry.example:5000/kubevirt/sidecar-shim:v1.2.1"
    )


def test_direct_child_features_are_named():
    spec = {
        "domain": {
            "cpu": {"dedicatedCpuPlacement": True, "realtime": {}},
            "devices": {"gpus": [{"name": "g", "deviceName": "nvidia"}]},
            "launchSecurity": {"sev": {}},
        }
    }
    found = p.direct_child_warnings(spec)
    assert len(found) == 4
    assert p.direct_child_warnings(example_vm()["spec"]["template"]["spec"]) == []
