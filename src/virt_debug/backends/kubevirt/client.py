"""Connection to the cluster, found the way kubectl finds it, and plain-JSON requests.

Every request goes through ``Kube.request``: manifests stay plain dicts from the
builders in ``objects`` to the wire, for core and KubeVirt resources alike. The
official client does the rest: kubeconfig parsing, auth plugins, TLS, in-cluster
service accounts.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from virt_debug.backends.kubevirt.unreachable import unreachable
from virt_debug.errors import KubernetesError

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MERGE_PATCH = "application/merge-patch+json"


@dataclass
class Connection:
    """Where to connect, from kubectl-style flags."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    request_timeout: float = 30.0


def _kubeconfig_files(explicit: str | None) -> str | None:
    # kubectl's order: --kubeconfig, $KUBECONFIG (a path list), ~/.kube/config.
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG")
    if env:
        return env
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


def _context_namespace(config_file: str, context: str | None) -> str | None:
    contexts, active = k8s_config.list_kube_config_contexts(config_file=config_file)
    chosen = active
    if context:
        chosen = next((c for c in contexts if c.get("name") == context), None)
    return ((chosen or {}).get("context") or {}).get("namespace")


def _new_configuration() -> k8s.Configuration:
    configuration = k8s.Configuration()
    # No retry of a failed connect or TLS handshake: urllib3 retries at once, so
    # a refused, unresolvable or untrusted server only fails three more times,
    # each with a warning. Idempotent requests cut off midway are still retried.
    configuration.retries = Retry(total=3, connect=0, other=0, backoff_factor=0.2)
    return configuration


# A kubeconfig is a few hundred nodes; a YAML "billion laughs" (anchors of lists
# of aliases of lists...) composes small and expands to billions.
MAX_KUBECONFIG_NODES = 100_000


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` holds with every alias expanded, counting no further
    than just past ``limit`` (so a bomb or a recursive alias costs ``limit`` steps)."""
    count = 0
    pending: list[Iterator[yaml.Node]] = [iter([root])]
    while pending and count <= limit:
        node = next(pending[-1], None)
        if node is None:
            pending.pop()
            continue
        count += 1
        if isinstance(node, yaml.SequenceNode):
            pending.append(iter(node.value))
        elif isinstance(node, yaml.MappingNode):
            pending.append(chain.from_iterable(node.value))
    return count


def _check_kubeconfig(config_file: str) -> None:
    """Refuse a kubeconfig that would expand to too much, before the client's loader
    (which expands it all, without bound) gets it.

    Anything else wrong with the files is left to the loader to report.
    """
    for path in config_file.split(os.pathsep):
        path = os.path.expanduser(path)
        try:
            with open(path, "rb") as f:
                # Composing keeps each anchored node once, however often aliased.
                root = yaml.compose(f, Loader=yaml.SafeLoader)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        except RecursionError:
            raise KubernetesError(
                f"kubeconfig {path} nests too deeply; refusing it",
                hint="check where this file came from, or pass another --kubeconfig",
            ) from None
        if root is not None and _expanded_nodes(root, MAX_KUBECONFIG_NODES) > (
            MAX_KUBECONFIG_NODES
        ):
            raise KubernetesError(
                f"kubeconfig {path} expands to too many YAML nodes (aliases); "
                "refusing it",
                hint="check where this file came from, or pass another --kubeconfig",
            )


def _no_configuration() -> KubernetesError:
    return KubernetesError(
        "no kubeconfig found (~/.kube/config or $KUBECONFIG) and not running in "
        "a pod: pass --kubeconfig FILE or set KUBECONFIG"
    )


def _context_names(config_file: str) -> list[str]:
    names: list[str] = []
    for path in config_file.split(os.pathsep):
        try:
            with open(os.path.expanduser(path)) as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        contexts = config.get("contexts") if isinstance(config, dict) else None
        for item in contexts if isinstance(contexts, list) else []:
            if isinstance(item, dict) and item.get("name"):
                names.append(str(item["name"]))
    return names


def _missing_context(
    e: Exception, config_file: str, asked: str | None
) -> KubernetesError | None:
    """The error for a context the kubeconfig lacks, or None if that is not it."""
    match = re.search(r"Expected object with name (.*) in .*contexts list", str(e))
    if not match:
        return None
    name = asked or match.group(1)
    which = "context" if asked else "the current-context"
    there = ", ".join(_context_names(config_file)) or "none"
    return KubernetesError(
        f"{which} {name!r} is not in {config_file}; contexts there: {there}"
    )


def connect(conn: Connection) -> Kube:
    """A client for the cluster named by kubeconfig/context, or the in-cluster one."""
    config_file = _kubeconfig_files(conn.kubeconfig)
    namespace = conn.namespace
    if not config_file and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        # Neither a kubeconfig nor a pod's service account to fall back on.
        raise _no_configuration()
    if config_file and not any(
        os.path.exists(os.path.expanduser(p)) for p in config_file.split(os.pathsep)
    ):
        named = "--kubeconfig" if conn.kubeconfig else "$KUBECONFIG"
        raise KubernetesError(
            f"cannot load the cluster configuration: {config_file} does not exist",
            hint=f"give {named} the path of an existing kubeconfig",
        )
    if config_file:
        _check_kubeconfig(config_file)
    try:
        if config_file:
            api_client = k8s_config.new_client_from_config(
                config_file=config_file,
                context=conn.context,
                client_configuration=_new_configuration(),
            )
            namespace = namespace or _context_namespace(config_file, conn.context)
        else:
            configuration = _new_configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)
            api_client = k8s.ApiClient(configuration)
            if not namespace and os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
                with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                    namespace = f.read().strip()
    except (
        ConfigException,
        OSError,
        ValueError,
        # A kubeconfig that is not YAML, or YAML of the wrong shape, reaches the
        # loader's dict lookups as is.
        yaml.YAMLError,
        TypeError,
        AttributeError,
        KeyError,
    ) as e:
        if config_file:
            missing = _missing_context(e, config_file, conn.context)
            if missing is not None:
                raise missing from e
        where = f" from {config_file}" if config_file else " of this pod"
        detail = " ".join(str(e).split()) or type(e).__name__
        hint = (
            f"check that {config_file} is a kubeconfig: "
            f"kubectl config view --kubeconfig {config_file}"
            if config_file
            else "pass --kubeconfig FILE or set KUBECONFIG"
        )
        raise KubernetesError(
            f"cannot load the cluster configuration{where}: {detail}", hint=hint
        ) from e
    log.debug("connecting to %s", api_client.configuration.host)
    return Kube(api_client, namespace or "default", conn.request_timeout)


class ApiError(KubernetesError):
    """A refused request, with its HTTP status for callers that expect some."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _describe(e: ApiException, method: str, path: str) -> ApiError:
    reason, raw = e.reason or "", e.body or ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        body = json.loads(raw or "{}")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        # A Status object, as the API server sends.
        message = str(body.get("message") or "")
        reason = str(body.get("reason") or reason)
    else:
        message = str(raw)[:200]
    status = int(e.status or 0)
    # One line, whatever the body was (a proxy's HTML page, a stack trace).
    message = " ".join(str(message).split())
    text = f"{method} {path}: {status} {reason}: {message}".rstrip(": ")
    if status == 403:
        text += " (your account lacks this permission; see `kubectl auth can-i`)"
    elif status == 401:
        text += " (the credentials were refused; log in again)"
    return ApiError(text, status, reason)


class Kube:
    """A namespace-aware client speaking plain JSON to the API server."""

    def __init__(
        self, api_client: k8s.ApiClient, namespace: str, timeout: float = 30.0
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        as_json: bool = True,
    ) -> Any:
        headers = {"Accept": "application/json" if as_json else "*/*"}
        if body is not None or method in ("POST", "PUT", "PATCH"):
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(
                *serialized, _request_timeout=self.timeout
            )
            response.read()
        except ApiException as e:
            raise _describe(e, method, path) from e
        except OSError as e:
            raise unreachable(e, self.host, self.timeout) from e
        except Exception as e:
            # urllib3 wraps connection failures in its own hierarchy.
            if type(e).__module__.startswith("urllib3"):
                raise unreachable(e, self.host, self.timeout) from e
            raise
        if not 200 <= response.status <= 299:
            raise _describe(
                ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=(response.data or b"").decode("utf-8", "replace"),
                ),
                method,
                path,
            )
        data = response.data or b""
        if not as_json:
            return data.decode("utf-8", "replace")
        if not data.strip():
            return None
        try:
            parsed = json.loads(data)
        except ValueError as e:
            parsed = e
        if not isinstance(parsed, dict):
            # Every answer of the API is a JSON object; anything else comes from
            # something in between (a proxy's error page, a wrong --server).
            shown = " ".join(data[:80].decode("utf-8", "replace").split())
            raise KubernetesError(
                f"{method} {path}: the server at {self.host} did not answer with "
                f"a Kubernetes object: {shown!r}",
                hint="check that the kubeconfig points at the API server itself",
            )
        return parsed

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None if it does not exist."""
        try:
            return self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def text(self, path: str, query: dict[str, str] | None = None) -> str:
        """A plain-text resource, such as a container's log."""
        return str(self.request("GET", path, query=query, as_json=False))

    def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        return list((self.request("GET", path, query=query) or {}).get("items") or [])

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body if body is not None else {})

    def delete(self, path: str) -> bool:
        """Delete; False if it was already gone."""
        try:
            self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1"})
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True


# Paths of the resources we touch, in one place.


def core(namespace: str, plural: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def kubevirt(namespace: str, plural: str, name: str = "") -> str:
    base = f"/apis/kubevirt.io/v1/namespaces/{namespace}/{plural}"
    return base + (f"/{name}" if name else "")


def vm_subresource(namespace: str, name: str, action: str) -> str:
    return (
        f"/apis/subresources.kubevirt.io/v1/namespaces/{namespace}"
        f"/virtualmachines/{name}/{action}"
    )


KUBEVIRTS_ALL = "/apis/kubevirt.io/v1/kubevirts"
