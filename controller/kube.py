"""The controller's API calls through kubernetes_asyncio: one ApiClient per cluster. Kube API I/O.

Everything kubernetes_asyncio returns is converted here into `controller.objects` types, and every
failure it (or aiohttp underneath) raises is translated here, once, into `controller.errors`:
404 → NotFound, 409 → Conflict, 410 → Expired, any other status → ApiError, no answer at all →
ClusterUnreachable.

LIST and WATCH read the raw JSON (`_preload_content=False`, and `Watch(return_type="object")`)
instead of the generated models: the objects go straight into our frozen dataclasses, and custom
resources have no generated models anyway. Leases use the typed CoordinationV1Api models, built
and read by `controller.kube_leases`. Clients are made by `controller.kube_config` (an unusable
kubeconfig → ConfigError there). These three modules are the only kubernetes_asyncio importers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from controller import errors, objects
from controller.kube_leases import LeaseRecord, lease_body, lease_record
from controller.objects import ObjectList, Resource, WatchEvent

log = logging.getLogger(__name__)

# Core ConfigMaps: listed and watched like the other typed resources (the controller keeps the
# policy revision histories in one, `controller.kubestate`).
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)


@dataclasses.dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the controller talks to one API server."""

    request_timeout_s: float = 10.0  # whole LIST/GET/PUT request, body included
    connect_timeout_s: float = 5.0  # TCP (and TLS) connect, for requests and watch streams
    probe_timeout_s: float = 2.0  # one GET /readyz


Call = Callable[..., Awaitable[Any]]


class ClusterClient:
    """One cluster's API: an ApiClient from a kubeconfig context, used only through this class."""

    def __init__(self, cluster: str, api_client: Any, settings: KubeSettings) -> None:
        self.cluster = cluster
        self.settings = settings
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- list and watch --------------------------------------------------------------------

    async def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList:
        """Every matching object and the resourceVersion the list is current at."""
        call, args = self._list_call(resource, namespace)
        kwargs = _selectors(label_selector, field_selector)
        timeout_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                response = await call(
                    *args, **kwargs, _preload_content=False, _request_timeout=timeout_s
                )
                async with response:
                    body = await response.read()
                    if response.status >= 400:
                        raise self._status_error(response.status, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(f"list {resource}", exc) from exc
        except ApiException as exc:
            raise self._api_error(exc) from exc
        try:
            data = json.loads(body)
            items = tuple(objects.parse_object(item) for item in data.get("items") or ())
            resource_version = str(data["metadata"]["resourceVersion"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.ApiError(self.cluster, 500, "BadList", f"list {resource}: {exc}") from exc
        return ObjectList(resource_version, items)

    async def watch_objects(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_s: float,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        bookmarks: bool = True,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after `resource_version` until the server ends the stream (`timeout_s`, rounded
        to whole seconds as the API takes them). Close it with `contextlib.aclosing`."""
        call, args = self._list_call(resource, namespace)
        kwargs = _selectors(label_selector, field_selector)
        kwargs.update(
            resource_version=resource_version,
            timeout_seconds=max(1, round(timeout_s)),
            allow_watch_bookmarks=bookmarks,
            _request_timeout=aiohttp.ClientTimeout(
                connect=self.settings.connect_timeout_s,
                sock_connect=self.settings.connect_timeout_s,
            ),
        )
        # return_type "object": events arrive as plain JSON, not generated models.
        async with watch.Watch(return_type="object") as stream:
            events = stream.stream(call, *args, **kwargs)
            while True:
                try:
                    raw = await events.__anext__()
                except StopAsyncIteration:
                    return
                except ApiException as exc:
                    raise self._api_error(exc) from exc
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise self._unreachable(f"watch {resource}", exc) from exc
                event = self._event(resource, raw)
                if event is not None:
                    yield event

    def _event(self, resource: Resource, raw: Any) -> WatchEvent | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("raw_object"), Mapping):
            raise errors.ApiError(
                self.cluster, 500, "BadWatchEvent", f"watch {resource}: {str(raw)[:120]}"
            )
        try:
            type_ = objects.EventType(raw.get("type"))
        except ValueError:
            raise errors.ApiError(
                self.cluster, 500, "BadWatchEvent", f"unknown event type {raw.get('type')!r}"
            ) from None
        body = raw["raw_object"]
        if type_ is objects.EventType.BOOKMARK:
            metadata = body.get("metadata")
            rv = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
            return WatchEvent(type_, str(rv), None) if rv else None
        try:
            obj = objects.parse_object(body)
        except ValueError as exc:
            log.warning(
                "skipping malformed object cluster=%s resource=%s: %s", self.cluster, resource, exc
            )
            return None
        return WatchEvent(type_, obj.meta.resource_version, obj)

    def _list_call(self, resource: Resource, namespace: str | None) -> tuple[Call, tuple[Any, ...]]:
        """The generated function that lists (and, with watch=True, watches) `resource`."""
        typed: dict[Resource, tuple[Call, Call]] = {
            objects.SERVICES: (
                self._core.list_service_for_all_namespaces,
                self._core.list_namespaced_service,
            ),
            objects.SECRETS: (
                self._core.list_secret_for_all_namespaces,
                self._core.list_namespaced_secret,
            ),
            objects.ENDPOINT_SLICES: (
                self._discovery.list_endpoint_slice_for_all_namespaces,
                self._discovery.list_namespaced_endpoint_slice,
            ),
            objects.LEASES: (
                self._coordination.list_lease_for_all_namespaces,
                self._coordination.list_namespaced_lease,
            ),
            CONFIG_MAPS: (
                self._core.list_config_map_for_all_namespaces,
                self._core.list_namespaced_config_map,
            ),
        }
        if resource in typed:
            every, one = typed[resource]
            return (one, (namespace,)) if namespace else (every, ())
        coordinates = (resource.group, resource.version)
        if not resource.namespaced:
            return self._custom.list_cluster_custom_object, (*coordinates, resource.plural)
        if namespace:
            return self._custom.list_namespaced_custom_object, (
                *coordinates,
                namespace,
                resource.plural,
            )
        return self._custom.list_custom_object_for_all_namespaces, (*coordinates, resource.plural)

    # -- readiness -------------------------------------------------------------------------

    async def probe_readyz(self) -> None:
        """Return when GET /readyz answers 200; raise ApiError or ClusterUnreachable otherwise."""
        timeout_s = self.settings.probe_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._api.call_api(
                    "/readyz",
                    "GET",
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=timeout_s,
                )
                async with response:
                    body = await response.read()
                    status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable("GET /readyz", exc) from exc
        except ApiException as exc:
            raise self._api_error(exc) from exc
        if status != 200:
            text = body.decode("utf-8", "replace").strip().replace("\n", "; ")
            raise errors.ApiError(self.cluster, status, "NotReady", text)

    # -- leases ----------------------------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> LeaseRecord:
        lease = await self._call(
            f"read lease {namespace}/{name}",
            self._coordination.read_namespaced_lease(
                name, namespace, _request_timeout=self.settings.request_timeout_s
            ),
        )
        return lease_record(lease)

    async def create_lease(self, record: LeaseRecord) -> LeaseRecord:
        """Conflict when the Lease already exists."""
        lease = await self._call(
            f"create lease {record.namespace}/{record.name}",
            self._coordination.create_namespaced_lease(
                record.namespace,
                lease_body(record),
                _request_timeout=self.settings.request_timeout_s,
            ),
        )
        return lease_record(lease)

    async def replace_lease(self, record: LeaseRecord) -> LeaseRecord:
        """Conditional on `record.resource_version`: Conflict when someone wrote it since."""
        lease = await self._call(
            f"replace lease {record.namespace}/{record.name}",
            self._coordination.replace_namespaced_lease(
                record.name,
                record.namespace,
                lease_body(record),
                _request_timeout=self.settings.request_timeout_s,
            ),
        )
        return lease_record(lease)

    # -- secrets ---------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        """A Secret's data, base64-decoded (e.g. a member cluster's kubeconfig)."""
        secret = await self._call(
            f"read secret {namespace}/{name}",
            self._core.read_namespaced_secret(
                name, namespace, _request_timeout=self.settings.request_timeout_s
            ),
        )
        try:
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        except (binascii.Error, TypeError) as exc:
            raise errors.ApiError(
                self.cluster, 500, "BadSecret", f"secret {namespace}/{name}: {exc}"
            ) from exc

    # -- config maps -------------------------------------------------------------------------

    async def read_config_map(self, namespace: str, name: str) -> Mapping[str, str]:
        """A ConfigMap's `data` (NotFound when there is none)."""
        found = await self._call(
            f"read configmap {namespace}/{name}",
            self._core.read_namespaced_config_map(
                name, namespace, _request_timeout=self.settings.request_timeout_s
            ),
        )
        return dict(found.data or {})

    async def write_config_map(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Set the keys of `data` in a ConfigMap (merge patch; other keys are kept), creating
        the ConfigMap when it does not exist yet."""
        body: Any = {"metadata": {"labels": dict(labels or {})}, "data": dict(data)}
        options: dict[str, Any] = {
            "_content_type": "application/merge-patch+json",  # as in patch_status
            "_request_timeout": self.settings.request_timeout_s,
        }
        try:
            await self._call(
                f"patch configmap {namespace}/{name}",
                self._core.patch_namespaced_config_map(name, namespace, body, **options),
            )
            return
        except errors.NotFound:
            pass
        body["metadata"]["name"] = name
        body.update(apiVersion="v1", kind="ConfigMap")
        try:
            await self._call(
                f"create configmap {namespace}/{name}",
                self._core.create_namespaced_config_map(
                    namespace, body, _request_timeout=self.settings.request_timeout_s
                ),
            )
        except errors.Conflict:  # created meanwhile (by a previous leader's late write)
            await self.write_config_map(namespace, name, data, labels=labels)

    # -- status and events (the leader's writes) ----------------------------------------------

    async def patch_status(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
    ) -> None:
        """Merge-patch `{"status": status}` through the object's status subresource (custom
        resources only). Keys of the current status that `status` does not name are kept."""
        coordinates = (resource.group, resource.version)
        body = {"status": dict(status)}
        options: dict[str, Any] = {
            # A dict body would be sent as a JSON patch otherwise (see docs/controller.md).
            "_content_type": "application/merge-patch+json",
            "_request_timeout": self.settings.request_timeout_s,
        }
        if resource.namespaced:
            if not namespace:
                raise ValueError(f"{resource} is namespaced: a namespace is required")
            request = self._custom.patch_namespaced_custom_object_status(
                *coordinates, namespace, resource.plural, name, body, **options
            )
        else:
            request = self._custom.patch_cluster_custom_object_status(
                *coordinates, resource.plural, name, body, **options
            )
        await self._call(f"patch status of {resource} {namespace or ''}/{name}", request)

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Create a core/v1 Event (the JSON body as the API takes it)."""
        body: Any = dict(event)  # the generated client serialises a plain dict as it is
        await self._call(
            f"create event in {namespace}",
            self._core.create_namespaced_event(
                namespace, body, _request_timeout=self.settings.request_timeout_s
            ),
        )

    # -- translation -----------------------------------------------------------------------

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await request
        except ApiException as exc:
            raise self._api_error(exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(what, exc) from exc

    def _unreachable(self, what: str, exc: BaseException) -> errors.ClusterUnreachable:
        detail = str(exc) or type(exc).__name__
        return errors.ClusterUnreachable(self.cluster, f"{what}: {detail}")

    def _api_error(self, exc: ApiException) -> errors.ApiError:
        status = int(exc.status or 0)
        if exc.body:
            return self._status_error(status, exc.body)
        # An ERROR watch event: kubernetes_asyncio folds the Status into "Reason: message".
        reason, _, message = str(exc.reason or "").partition(": ")
        return _error_class(status)(self.cluster, status, reason or "Unknown", message)

    def _status_error(self, status: int, body: bytes | str) -> errors.ApiError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, Mapping):
            reason, message = str(data.get("reason") or ""), str(data.get("message") or "")
        else:
            reason, message = "", text
        return _error_class(status)(self.cluster, status, reason or "Unknown", message)


def _error_class(status: int) -> type[errors.ApiError]:
    return {404: errors.NotFound, 409: errors.Conflict, 410: errors.Expired}.get(
        status, errors.ApiError
    )


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if label_selector:
        kwargs["label_selector"] = label_selector
    if field_selector:
        kwargs["field_selector"] = field_selector
    return kwargs
