"""Validation of our manifests against the real schemas: KubeVirt's OpenAPI document
(shared data) and Kubernetes' own (the kubernetes-validate package, offline)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SWAGGER = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "kubevirt"
    / "swagger.json"
)
K8S_VERSION = "1.30.0"

# The hookSidecars element as KubeVirt's hooks package reads it (facts file): KubeVirt's
# OpenAPI cannot check it, the annotation being a string.
SIDECAR_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "image": {"type": "string"},
            "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            "command": {"type": "array", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}},
            "configMap": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "key", "hookPath"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "key": {"type": "string", "minLength": 1},
                    "hookPath": {
                        "enum": ["/usr/bin/onDefineDomain", "/usr/bin/preCloudInitIso"]
                    },
                },
            },
            "pvc": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "volumePath"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "volumePath": {"type": "string", "pattern": "^/"},
                    "sharedComputePath": {"type": "string", "pattern": "^/"},
                },
            },
        },
    },
}


def _strict(node: Any) -> Any:
    # KubeVirt's document allows unknown fields; a typo of ours must not pass.
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_strict(v) for v in node]
    return node


@functools.cache
def _kubevirt_definitions() -> dict[str, Any]:
    return _strict(json.loads(SWAGGER.read_text())["definitions"])


def validate_kubevirt(obj: dict[str, Any], definition: str) -> None:
    """Validate against a definition of KubeVirt's OpenAPI (e.g. v1.VirtualMachine)."""
    schema = {
        "$ref": f"#/definitions/{definition}",
        "definitions": _kubevirt_definitions(),
    }
    jsonschema.Draft4Validator(schema).validate(obj)


def validate_kubernetes(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)


def validate_sidecars(value: str) -> list[dict[str, Any]]:
    sidecars = json.loads(value)
    jsonschema.validate(sidecars, SIDECAR_SCHEMA)
    return sidecars
