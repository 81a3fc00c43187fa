"""The snapshot API over HTTP (aiohttp server I/O): long-poll for snapshots, the gateway list.

Protocol (DESIGN.md §1), served under `/v1`; the state behind it is `controller.publishing`'s
`Publisher`, the query parsing `controller.snapshot_params`:


* `GET /v1/snapshot?after=V&checksum=C&applied=A&gateway=ID&zone=Z&wait=S` answers `200` with
  the latest snapshot JSON as soon as its version is greater than `V`, or — when the gateway sent
  the checksum `C` of the table it holds — as soon as the latest content differs from `C` and is
  not version `V` itself, or `304` when neither happens within `S` seconds (capped by
  `PublishSettings.max_wait_s`). Both answers carry `X-Fleetgate-Version` (the latest version, 0
  when none yet); a `200` also carries `ETag` (the content checksum).
* **Replicas are interchangeable.** Versions come from each replica's clock, so a gateway moving
  from one replica to another (a Service in front of several) may hold a version the new replica
  has not reached, or passed, with other content. The checksum settles it: a replica answers with
  its latest whenever the content differs from what the gateway holds, whatever the numbers.
* **Deltas.** When the gateway sent `C`, did not ask `delta=0`, and the publisher still has the
  parts of a snapshot with checksum `C` (the last `PublishSettings.delta_bases` published), and
  only spreads' targets changed since, the `200` is a delta (`policies.delta`: the changed
  spreads, a few kB instead of megabytes) with `X-Fleetgate-Base: C`. A gateway that cannot apply
  it asks again with `delta=0` and gets the full snapshot.
* **Applied versions ride on the next poll** (`applied=A`) rather than on a separate
  `POST`: a gateway re-polls the moment it has applied a snapshot, so the report costs no extra
  request and arrives as early as a POST would. `after` is the last version the gateway
  *received* (applied or refused), so a snapshot it refuses is not sent to it again in a loop;
  `applied` is what it actually serves, and what "3/3 gateways on v42" counts.
* `metrics=URL` (optional): the gateway's admin `/metrics` URL, which built-in release analysis
  scrapes when the controller has no static list (`Publisher.metrics_urls`). An `http(s)` URL
  whose host is the polling peer's own address; any host only when the snapshot API requires a
  token (`PublishSettings.token`), so an anonymous client cannot point the controller (and the
  admin token it sends) elsewhere. Other URLs are ignored.
* The registry also keeps the `checksum` each gateway sent (the content it serves): in Kubernetes
  mode replicas share their gateways by checksum (`shared_entries`, `controller.gateway_registry`)
  and the leader counts the others' in its rollouts (`feed_remote`).
* `GET /v1/gateways` lists every gateway seen: id, zone, applied version and `checksum`, how
  far behind it is (`behind` versions, `lag_s` seconds since the first version it lacks was
  published), when it was last seen, and whether it counts as live. On the leader it also lists
  the other replicas' gateways its rollouts count, with the `replica` they poll (null for its
  own): `applied` is the leader's newest version with the content they serve (0 when it has none
  and `checksum` alone names it), `behind` and `lag_s` are counted from that. A standby lists
  only its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from controller import snapshot_params as params
from controller.publishing import Publisher

VERSION_HEADER = "X-Fleetgate-Version"
BASE_HEADER = "X-Fleetgate-Base"  # on a delta: the checksum of the table it applies to

PUBLISHER = web.AppKey("publisher", Publisher)


def add_routes(app: web.Application, publisher: Publisher) -> None:
    """Mount the snapshot API on `app` (the controller may serve it next to its operator API)."""
    app[PUBLISHER] = publisher
    app.router.add_get("/v1/snapshot", _get_snapshot)
    app.router.add_get("/v1/gateways", _get_gateways)

    async def close_publisher(app: web.Application) -> None:
        app[PUBLISHER].close()

    app.on_shutdown.append(close_publisher)


def build_app(publisher: Publisher) -> web.Application:
    app = web.Application()
    add_routes(app, publisher)
    return app


async def _get_snapshot(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    params.authorize(request, publisher.settings.token)
    query = request.query
    after = params.int_param(query, "after") or 0
    applied = params.int_param(query, "applied")
    gateway_id = params.id_param(query, "gateway")
    zone = params.id_param(query, "zone")
    wait_s = params.wait_param(
        query, publisher.settings.default_wait_s, publisher.settings.max_wait_s
    )
    metrics_url = params.metrics_param(request, publisher.settings.token)
    held = params.checksum_param(query, "checksum")

    if gateway_id is not None:
        publisher.begin_poll(gateway_id, zone, applied, metrics_url, held)
    try:
        found = await publisher.wait_newer(after, timeout_s=wait_s, checksum=held)
    finally:
        if gateway_id is not None:
            publisher.end_poll(gateway_id)

    latest = publisher.latest
    headers = {VERSION_HEADER: str(latest.version if latest else 0), "Cache-Control": "no-store"}
    if found is None:
        response = web.Response(status=304, headers=headers)
        if publisher.closing:
            response.force_close()  # shutting down: the gateway reconnects (and backs off)
        return response
    headers[VERSION_HEADER] = str(found.version)
    headers["ETag"] = f'"{found.checksum}"'
    body = found.body
    if held is not None and query.get("delta") != "0":
        delta_body = publisher.delta(found, held)
        if delta_body is not None:
            body = delta_body
            headers[BASE_HEADER] = held
    publisher.served["full" if body is found.body else "delta"] += 1
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _get_gateways(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    params.authorize(request, publisher.settings.token)
    latest = publisher.latest
    views = publisher.gateways()
    body: dict[str, Any] = {
        "version": latest.version if latest else None,
        "checksum": latest.checksum if latest else None,
        "rollout": str(publisher.rollout(latest.version)) if latest else None,
        "gateways": [dataclasses.asdict(view) for view in views],
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})
