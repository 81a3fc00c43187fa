"""Realistic users against `fleetgate demo` (locust; sends HTTP to a loopback gateway only).

Three kinds of users share one gateway: shoppers browsing the shop host (a few of them opted into
the canary with `x-canary: always`), API clients on the api host, and old bookmarks that the
gateway redirects. At the end it prints which cluster and version answered, per host, which is
the weighted split and the header canary as a user sees them.

    fleetgate demo &          # in another terminal
    pip install '.[bench]'
    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080 \\
        --headless --users 50 --spawn-rate 10 --run-time 1m

Hosts and paths follow the demo's example policies; override them with the environment
variables below if your policy directory differs.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import random
import urllib.parse
from typing import Any

from locust import FastHttpUser, between, events, tag, task
from locust.env import Environment

SHOP_HOST = os.environ.get("FLEETGATE_SHOP_HOST", "shop.example.com")
API_HOST = os.environ.get("FLEETGATE_API_HOST", "api.example.com")
REDIRECT_PATH = os.environ.get("FLEETGATE_REDIRECT_PATH", "/old-shop")
CANARY_HEADER = os.environ.get("FLEETGATE_CANARY_HEADER", "x-canary")
PRODUCTS = 500

# (host, cluster, version) -> answers; filled from the demo backends' x-cluster / x-version headers.
SPLIT: collections.Counter[tuple[str, str, str]] = collections.Counter()


def _note(host: str, headers: Any) -> None:
    SPLIT[(host, headers.get("x-cluster", "?"), headers.get("x-version", "?"))] += 1


# locust's event hooks are untyped; the ignore is "unused" where locust is not installed.
@events.test_start.add_listener  # type: ignore[untyped-decorator, unused-ignore]
def _loopback_only(environment: Environment, **_: Any) -> None:
    """This file exists to load a local demo: refuse any target outside 127.0.0.0/8."""
    target = urllib.parse.urlsplit(environment.host or "").hostname or ""
    try:
        loopback = target == "localhost" or ipaddress.ip_address(target).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to load {environment.host!r}: use a loopback address")


@events.test_stop.add_listener  # type: ignore[untyped-decorator, unused-ignore]
def _print_split(environment: Environment, **_: Any) -> None:
    totals: collections.Counter[str] = collections.Counter()
    for (host, _cluster, _version), count in SPLIT.items():
        totals[host] += count
    print("\nanswers by host, cluster and version:")
    for (host, cluster, version), count in sorted(SPLIT.items()):
        print(f"  {host:<28} {cluster:<12} {version:<8} {count:>8}  {count / totals[host]:6.1%}")


class Shopper(FastHttpUser):
    """Browses the shop: home, listings, product pages, now and then the cart."""

    weight = 8
    wait_time = between(0.5, 2.0)
    canary = False

    def _get(self, path: str, name: str) -> None:
        headers = {"Host": SHOP_HOST, "Accept": "text/html"}
        if self.canary:
            headers[CANARY_HEADER] = "always"
        with self.client.get(path, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            _note(SHOP_HOST + (" (canary)" if self.canary else ""), resp.headers)

    @tag("shop")
    @task(3)
    def home(self) -> None:
        self._get("/", "shop /")

    @tag("shop")
    @task(5)
    def listing(self) -> None:
        page = random.randint(1, 20)
        self._get(f"/products?page={page}", "shop /products?page=[n]")

    @tag("shop")
    @task(8)
    def product(self) -> None:
        self._get(f"/products/{random.randrange(PRODUCTS)}", "shop /products/[id]")

    @tag("shop")
    @task(1)
    def add_to_cart(self) -> None:
        headers = {"Host": SHOP_HOST, "Content-Type": "application/json"}
        if self.canary:
            headers[CANARY_HEADER] = "always"
        body = json.dumps({"product": random.randrange(PRODUCTS), "quantity": 1})
        with self.client.post(
            "/cart", data=body, headers=headers, name="shop POST /cart", catch_response=True
        ) as resp:
            if resp.status_code >= 400:
                resp.failure(f"HTTP {resp.status_code}")


class CanaryShopper(Shopper):
    """A tester or opted-in customer: the same browsing, pinned to the canary by a header."""

    weight = 1
    canary = True


class ApiClient(FastHttpUser):
    """A partner integration: frequent small JSON calls on the api host."""

    weight = 3
    wait_time = between(0.1, 0.5)

    def _call(self, method: str, path: str, name: str, body: dict[str, Any] | None = None) -> None:
        headers = {"Host": API_HOST, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        with self.client.request(
            method, path, data=data, headers=headers, name=name, catch_response=True
        ) as resp:
            if resp.status_code >= 400:
                resp.failure(f"HTTP {resp.status_code}")
                return
            _note(API_HOST, resp.headers)

    @tag("api")
    @task(6)
    def list_orders(self) -> None:
        self._call("GET", f"/v1/orders?limit={random.choice((10, 50))}", "api GET /v1/orders")

    @tag("api")
    @task(3)
    def get_order(self) -> None:
        self._call("GET", f"/v1/orders/{random.randrange(10_000)}", "api GET /v1/orders/[id]")

    @tag("api")
    @task(1)
    def create_order(self) -> None:
        order = {"items": [{"product": random.randrange(PRODUCTS), "quantity": 2}]}
        self._call("POST", "/v1/orders", "api POST /v1/orders", order)


class OldBookmark(FastHttpUser):
    """Someone following an old link: the gateway answers with a redirect, never the backend."""

    weight = 1
    wait_time = between(2.0, 5.0)

    @tag("redirect")
    @task
    def follow_old_link(self) -> None:
        with self.client.get(
            REDIRECT_PATH,
            headers={"Host": SHOP_HOST},
            name=f"shop {REDIRECT_PATH} (redirect)",
            allow_redirects=False,
            catch_response=True,
        ) as resp:
            if resp.status_code not in (301, 302, 303, 307, 308):
                resp.failure(f"expected a redirect, got HTTP {resp.status_code}")
            elif not resp.headers.get("location"):
                resp.failure("redirect without a Location header")
