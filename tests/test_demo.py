"""`fleetgate demo --traffic 200 --exit`: the README's first command, end to end as a process.
Demo backends on 127.0.1.x/127.0.2.x/127.0.3.x (free ports), the gateway on 127.0.0.1:<any>."""

from __future__ import annotations

import re
import subprocess
import sys

ROW = re.compile(r"^ +(\w+) +(v\d+) +(\d+) +([\d.]+)%$", re.MULTILINE)


def test_demo_sends_traffic_and_prints_the_split() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fleetgate", "demo", "--traffic", "200", "--exit",
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--backend-ports", "any",
         "--log-level", "warning"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "curl -s -H 'Host: shop.example.com' -H 'x-canary: always'" in out
    assert "/old/cart" in out
    assert "/status" in out
    assert "/metrics" in out
    split_text, canary_text = out.split("header canary (", 1)
    split = {(c, v): int(n) for c, v, n, _ in ROW.findall(split_text)}
    canary = {(c, v): int(n) for c, v, n, _ in ROW.findall(canary_text)}
    assert sum(split.values()) == 200
    assert set(split) == {("east", "v1"), ("west", "v1")}  # eu is the failover tier: idle
    assert split[("east", "v1")] > split[("west", "v1")]  # weights 3:1
    assert canary
    assert all(version == "v2" for _, version in canary)
    assert "failed:" not in out
