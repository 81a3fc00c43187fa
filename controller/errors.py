"""Control-plane errors: one base class, a subclass only where a caller branches on it. Pure.

`controller.kube` translates every kubernetes_asyncio / aiohttp failure into one of these, once,
with `raise ... from exc` (`controller.kube_config` the kubeconfig loaders' failures, into
ConfigError); nothing above them sees a third-party exception.
"""

from __future__ import annotations

_MAX_REMOTE_TEXT = 256  # cap on quoted server text, so a hostile or huge body cannot flood logs


class ControllerError(Exception):
    """Base of every error the controller raises on purpose."""


class ConfigError(ControllerError):
    """A kubeconfig (file, dict or Secret) that cannot be used: the cluster is never contacted."""


class ClusterUnreachable(ControllerError):
    """No HTTP answer from a cluster's API server (refused, reset, timed out, TLS failure)."""

    def __init__(self, cluster: str, detail: str) -> None:
        super().__init__(f"cluster {cluster!r} is unreachable: {detail[:_MAX_REMOTE_TEXT]}")
        self.cluster = cluster


class ApiError(ControllerError):
    """The API server answered with an error status. `status` is the HTTP code (or the Status
    object's `code` for an ERROR watch event); `reason` is the Status `reason` (e.g. "NotFound")."""

    def __init__(self, cluster: str, status: int, reason: str, message: str) -> None:
        super().__init__(
            f"cluster {cluster!r} answered {status} {reason}: {message[:_MAX_REMOTE_TEXT]}"
        )
        self.cluster = cluster
        self.status = status
        self.reason = reason
        self.message = message[:_MAX_REMOTE_TEXT]

    @property
    def retriable(self) -> bool:
        """429 and 5xx: back off and try again; anything else will not heal by waiting."""
        return self.status == 429 or self.status >= 500


class NotFound(ApiError):
    """404: the object does not exist (e.g. the Lease before the first election)."""


class Conflict(ApiError):
    """409: a write lost an optimistic-concurrency race (stale resourceVersion) or the object
    already exists. Re-read and decide again."""


class Expired(ApiError):
    """410: the requested resourceVersion is older than the server keeps. Relist."""
