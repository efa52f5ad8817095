"""A local Kubernetes API server over real HTTP, exec websocket included.

kmock's ``KubernetesEmulator`` (a stateful API mock) listens on 127.0.0.1 in a thread
with its own event loop; the tests point the official client at it through a
kubeconfig file, so every request of the backend crosses real HTTP. Exec requests
get the websocket channel protocol of the real API server, the command running here
as a local process (see ``ExecEmulator``). ``kubevirt_fake`` plays KubeVirt behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import kmock
import yaml

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kubevirt"
VM = "kubevirt.io/v1/virtualmachines"
VMI = "kubevirt.io/v1/virtualmachineinstances"
KUBEVIRT = "kubevirt.io/v1/kubevirts"
PODS = "v1/pods"
CONFIGMAPS = "v1/configmaps"
PVCS = "v1/persistentvolumeclaims"
EVENTS = "v1/events"
RESOURCES = {
    VM: "VirtualMachine",
    VMI: "VirtualMachineInstance",
    KUBEVIRT: "KubeVirt",
    PODS: "Pod",
    CONFIGMAPS: "ConfigMap",
    PVCS: "PersistentVolumeClaim",
    EVENTS: "Event",
}
SUBRESOURCES = kmock.resource("subresources.kubevirt.io", "v1", "virtualmachines")
MOUNT = "/var/run/virt-debug"


def _python39() -> str:
    # The sidecar-shim's python is 3.9: run the helper and hook commands on one if here.
    candidates = sorted(Path("/root/.pyenv/versions").glob("3.9*/bin/python3.9"))
    candidates += [Path(p) for p in [shutil.which("python3.9")] if p]
    for candidate in candidates:
        probe = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return str(candidate)
    return sys.executable


PYTHON39 = _python39()


class LongLinesServer(aiohttp.test_utils.RawTestServer):
    async def _make_runner(self, **kwargs):
        return await super()._make_runner(max_line_size=1 << 20, **kwargs)


class ExecEmulator(kmock.KubernetesEmulator):
    """kmock plus the pods/exec websocket, the way the API server relays exec.

    The command runs here as a local process, the pod's PVC being a local directory
    (``volumes``: claim name -> directory), and its streams travel in the channel
    protocol (v5.channel.k8s.io, v4 as fallback) that ``kubernetes.stream`` speaks.
    """

    async def _handle(self, request: kmock.Request):
        raw = request._raw_request
        upgrade = (raw.headers.get("Upgrade") or "").lower() if raw else ""
        if request.subresource == "exec" and upgrade == "websocket":
            return await self._serve_exec(request)
        self._check_resource_version(request)
        return await super()._handle(request)

    def _check_resource_version(self, request: kmock.Request) -> None:
        # Optimistic concurrency as the API server does it: a patch that names a
        # resourceVersion must name the current one, and each patch bumps it.
        if request.method.value != "PATCH" or not isinstance(request.data, dict):
            return
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        for hook in self.before_patch:
            hook(request)
        stored = self.objects[key].get("metadata", {}).get("resourceVersion")
        sent = (request.data.get("metadata") or {}).get("resourceVersion")
        if sent is not None and stored is not None and sent != stored:
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message="the object has been modified; please apply your changes "
                "to the latest version and try again",
            )
        if stored is not None:
            request.data.setdefault("metadata", {})["resourceVersion"] = str(
                int(stored) + 1
            )

    async def _serve_exec(self, request: kmock.Request):
        raw = request._raw_request
        ws = aiohttp.web.WebSocketResponse(protocols=self.exec_protocols)
        await ws.prepare(raw)
        pod = self.objects[kmock.resource(PODS), request.namespace, request.name].raw
        claims = [
            (v.get("persistentVolumeClaim") or {}).get("claimName")
            for v in pod["spec"].get("volumes", [])
        ]
        root = next(self.exec_volumes[c] for c in claims if c in self.exec_volumes)
        argv = [
            str(root) + a[len(MOUNT) :] if a.startswith(MOUNT) else a
            for a in raw.query.getall("command")
        ]
        argv = [
            PYTHON39 if i == 0 and a == "python3" else a for i, a in enumerate(argv)
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        if raw.query.get("stdin") != "true":
            proc.stdin.close()

        async def pump(stream, channel: int) -> None:
            while chunk := await stream.read(1 << 16):
                await ws.send_bytes(bytes([channel]) + chunk)

        async def feed() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    break
                channel, data = message.data[0], message.data[1:]
                if channel == 0 and not proc.stdin.is_closing():
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                elif channel == 255 and data[:1] == b"\x00":
                    proc.stdin.close()

        feeder = asyncio.ensure_future(feed())
        await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
        code = await proc.wait()
        feeder.cancel()
        self.exec_calls.append(list(raw.query.getall("command")))
        status = (
            {"metadata": {}, "status": "Success"}
            if code == 0
            else {
                "metadata": {},
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        )
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws


class KubeServer:
    """kmock on a real port, driven from the test's thread."""

    def __init__(self, exec_volumes: dict[str, Path] | None = None) -> None:
        self.exec_volumes = exec_volumes or {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self.kmock: kmock.KubernetesEmulator | None = None
        self.ticks: list[Any] = []
        self.errors: list[BaseException] = []
        self._stop: asyncio.Future | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> KubeServer:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the local API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = self.loop.create_future()
        mock = ExecEmulator()
        mock.exec_volumes = self.exec_volumes
        mock.exec_calls = []
        mock.before_patch = []
        mock.exec_protocols = ("v5.channel.k8s.io", "v4.channel.k8s.io")
        # The helper commands travel in the exec URL (about 8 KiB); kube-apiserver
        # takes up to 1 MiB of request line and headers, aiohttp only 8 KiB by default.
        async with mock, kmock.Server(mock, server_cls=LongLinesServer) as server:
            self.kmock = mock
            # Served even while empty, as on a real cluster with KubeVirt installed.
            for resource, kind in RESOURCES.items():
                mock.resources[resource] = {
                    "kind": kind,
                    "namespaced": True,
                    "verbs": ["get", "list", "create"],
                }
            self.url = str(server.url).rstrip("/")
            self.ready.set()
            ticker = asyncio.ensure_future(self._tick())
            await self._stop
            ticker.cancel()

    async def _tick(self) -> None:
        # The fake controllers run here, between requests, never during one.
        while True:
            for tick in list(self.ticks):
                try:
                    tick()
                except Exception as e:  # surfaced by the test, not lost in the loop
                    self.errors.append(e)
            await asyncio.sleep(0.01)

    def call(self, fn, *args):
        """Run ``fn`` in the server's loop and return its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    # State, read and written safely from the test thread.

    def put(self, resource: str, namespace: str | None, obj: dict) -> None:
        name = obj["metadata"]["name"]
        self.call(
            lambda: self.kmock.objects.__setitem__((resource, namespace, name), obj)
        )

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        def read():
            key = (kmock.resource(resource), namespace, name)
            if key not in self.kmock.objects or self.kmock.objects[key].deleted:
                return None
            return json.loads(json.dumps(self.kmock.objects[key].raw))

        return self.call(read)

    def names(self, resource: str, namespace: str) -> list[str]:
        def read():
            return sorted(
                name
                for (res, ns, name), obj in self.kmock.objects.items()
                if res == resource and ns == namespace and not obj.deleted
            )

        return self.call(read)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "local-test-token"}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {
                        "cluster": "local",
                        "user": "tester",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        return path
