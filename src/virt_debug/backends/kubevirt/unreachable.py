"""Why the API server could not be reached, in a few words.

urllib3 reports a failed connection as a chain of wrappers (``MaxRetryError``
around ``NewConnectionError`` around ``ConnectionRefusedError``) whose text runs to
hundreds of characters. The user needs the innermost cause and what to check.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator

from urllib3 import exceptions as http

from virt_debug.errors import KubernetesError

CHECK_SERVER = "check the cluster is up and the kubeconfig's server address"
CHECK_CA = (
    "check the kubeconfig's certificate-authority for this cluster, "
    "or that its server address is the API server's"
)

_ERRNO_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out connecting",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by the server",
}


def _chain(e: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and the exceptions it wraps, outermost first."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        wrapped = [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(item, "reason", None)
        for nxt in [reason, item.__cause__, item.__context__, *wrapped]:
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def cause(e: BaseException, timeout: float | None = None) -> tuple[str, str]:
    """A short cause of a failed request, and what to check."""
    chain = list(_chain(e))
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            detail = getattr(item, "verify_message", "") or ""
            text = f"TLS verify failed ({detail})" if detail else "TLS verify failed"
            return text, CHECK_CA
    for item in chain:
        if isinstance(item, http.NameResolutionError | socket.gaierror):
            return "name not resolved", CHECK_SERVER
        if isinstance(item, http.ConnectTimeoutError) and not isinstance(
            item, http.NewConnectionError
        ):
            return "timed out connecting", CHECK_SERVER
        if isinstance(item, http.ReadTimeoutError | TimeoutError):
            after = f" within {timeout:g}s" if timeout else ""
            return f"no answer{after}", CHECK_SERVER
        if isinstance(item, OSError) and item.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[item.errno], CHECK_SERVER
    for item in chain:
        if isinstance(item, ssl.SSLError | http.SSLError):
            reason = getattr(item, "reason", None)
            detail = f" ({reason})" if isinstance(reason, str) else ""
            return f"TLS handshake failed{detail}", CHECK_CA
        if isinstance(item, http.ProtocolError | ConnectionError):
            return "the connection was closed", CHECK_SERVER
    # Something else: its own words, on one line and short.
    inner = chain[-1]
    text = " ".join(str(inner).split()) or type(inner).__name__
    return (text[:117] + "...") if len(text) > 120 else text, CHECK_SERVER


def unreachable(e: BaseException, host: str, timeout: float | None = None):
    """The error to raise for a request that never got an answer."""
    text, hint = cause(e, timeout)
    return KubernetesError(f"cannot reach the API server at {host}: {text}", hint=hint)
