"""Why a traced start failed, in a few lines: what KubeVirt and the pod report.

The VMI's conditions, the launcher pod's container states, the warning events of
both, and the errors virt-launcher and our hook sidecar logged: virt-launcher logs
JSON lines (``level``, ``msg``, ``reason``), the sidecar logs the hook's stderr.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import Kube
from virt_debug.errors import KubernetesError

log = logging.getLogger(__name__)

LOG_LINES = 300
SHOWN = 5


def explain(
    kube: Kube, namespace: str, vmi: dict | None, pod: dict | None
) -> list[str]:
    lines = _conditions(vmi) + _containers(pod)
    lines += _events(kube, namespace, vmi, pod)
    if pod is not None:
        lines += launcher_errors(kube, namespace, pod)
    return lines


def _conditions(vmi: dict | None) -> list[str]:
    lines = []
    for cond in ((vmi or {}).get("status") or {}).get("conditions") or []:
        message = cond.get("message") or cond.get("reason") or ""
        if cond.get("status") != "True" and message:
            lines.append(f"VMI condition {cond.get('type')}: {message}")
    return lines


def _containers(pod: dict | None) -> list[str]:
    lines = []
    for container in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        state = container.get("state") or {}
        for key in ("waiting", "terminated"):
            detail = state.get(key) or {}
            if detail.get("message") or detail.get("reason"):
                lines.append(
                    f"container {container.get('name')} {key}: "
                    f"{detail.get('reason', '')} {detail.get('message', '')}".rstrip()
                )
    return lines


def _events(kube: Kube, namespace: str, *objects: dict | None) -> list[str]:
    found = {((o or {}).get("metadata") or {}).get("name") for o in objects if o}
    names = sorted(str(n) for n in found if n)
    lines = []
    for name in names:
        selector = f"involvedObject.name={name}"
        for event in kube.list(api.core(namespace, "events"), field_selector=selector):
            involved = event.get("involvedObject") or {}
            if involved.get("name") == name and event.get("type") == "Warning":
                lines.append(
                    f"event {involved.get('kind')}/{name} "
                    f"{event.get('reason')}: {event.get('message')}"
                )
    return lines


def launcher_errors(kube: Kube, namespace: str, pod: dict[str, Any]) -> list[str]:
    """The last errors in the compute and hook sidecar containers' logs."""
    name = pod["metadata"]["name"]
    lines = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        cname = container.get("name", "")
        if cname != "compute" and not cname.startswith("hook-sidecar"):
            continue
        try:
            text = kube.text(
                api.core(namespace, "pods", name) + "/log",
                {"container": cname, "tailLines": str(LOG_LINES)},
            )
        except KubernetesError as e:
            log.debug("no log of %s/%s: %s", name, cname, e)
            continue
        found = [m for m in map(_error_message, text.splitlines()) if m]
        lines += [f"{cname} log: {m}" for m in found[-SHOWN:]]
    return lines


def _error_message(line: str) -> str:
    line = line.strip()
    if not line.startswith("{"):
        # Plain text: the hook's own stderr, as the sidecar logs it.
        return line if "error" in line.lower() else ""
    try:
        entry = json.loads(line)
    except ValueError:
        return ""
    if not isinstance(entry, dict) or entry.get("level") not in ("error", "fatal"):
        return ""
    message = str(entry.get("msg") or "")
    reason = str(entry.get("reason") or "")
    return f"{message}: {reason}" if reason and reason not in message else message
