"""Applying the onDefineDomain hook the way virt-launcher does.

virt-launcher hands the domain XML to the hook sidecar, defines what comes back, reads
the definition back from libvirt (now with the ``<emulator>`` libvirt filled in) and
passes it through the hook again before defining it once more. The local backend does
the same with the same standalone script and the shim's argv, so a local run exercises
exactly what a cluster will run.
"""

import json
import logging
import shutil
import signal
import subprocess
from pathlib import Path

from virt_debug.backends.libvirt.domain import define
from virt_debug.errors import Interrupted, LibvirtError, UsageError

log = logging.getLogger(__name__)

# virt-launcher gives each hook call one minute.
HOOK_TIMEOUT = 60.0


def system_python() -> str:
    """The system's python3, as in the sidecar image (not this tool's venv)."""
    for candidate in ("/usr/bin/python3", "/bin/python3"):
        if Path(candidate).is_file():
            return candidate
    found = shutil.which("python3")
    if found is None:
        raise UsageError("no python3 on this machine to run the domain hook with")
    return found


def vmi_json(name: str) -> str:
    """A minimal VirtualMachineInstance, standing in for the one KubeVirt passes."""
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "local", "annotations": {}},
        "spec": {"domain": {"devices": {}}},
    }
    return json.dumps(vmi, separators=(",", ":"))


def run_hook(
    script: Path, domain_xml: str, vmi: str, *, python: str | None = None
) -> str:
    """The hook's output for ``domain_xml``; LibvirtError with its message if not."""
    argv = [
        python or system_python(),
        str(script),
        "--vmi",
        vmi,
        "--domain",
        domain_xml,
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=HOOK_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise LibvirtError(
            f"the onDefineDomain hook {script} did not answer "
            f"within {HOOK_TIMEOUT:.0f} s"
        ) from e
    except OSError as e:
        raise LibvirtError(f"cannot run the onDefineDomain hook {script}: {e}") from e

    if done.returncode in (-signal.SIGINT, -signal.SIGTERM):
        # Ctrl-C reaches the hook too (one process group): the user stopped the run.
        raise Interrupted(f"interrupted while the onDefineDomain hook ran ({script})")
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1:] or [f"status {done.returncode}"]
        raise LibvirtError(f"the onDefineDomain hook refused the domain: {message[0]}")
    if not done.stdout.strip():
        raise LibvirtError("the onDefineDomain hook printed no domain XML")
    return done.stdout


def define_through_hook(conn, script: Path, xml: str, name: str):
    """Define ``xml`` through the hook twice, as virt-launcher does; the domain."""
    import libvirt

    vmi = vmi_json(name)

    # First call: the XML as given (a KubeVirt domain has no <emulator> here). This
    # define is the one that makes libvirt probe the wrapper as a new emulator.
    first = run_hook(script, xml, vmi)
    domain = define(conn, first, what=f"define {name} with the wrapper as its emulator")
    if domain.name() != name:
        # A guard: every later step (restore included) finds the domain by name.
        raise LibvirtError(
            f"libvirt named the domain {domain.name()!r}, not {name!r}",
            hint="write the name in <name> as plain text",
        )

    # Second call: the definition as libvirt holds it now.
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    second = run_hook(script, domain.XMLDesc(flags), vmi)
    log.debug("%s: hook output defined twice", name)
    return define(conn, second, what=f"define {name} a second time through the hook")
