"""Kubeconfig files that point a kubernetes_asyncio client at simulators. Pure (plus one write).

One cluster, user (bearer token) and context per simulator, named after it, as `kubectl config
view` shows a multi-cluster config; the controller picks member clusters by context name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tests.fakes.kube_store import JSON

if TYPE_CHECKING:
    from tests.fakes.kube_api import KubeApiSimulator


def kubeconfig(sims: Iterable[KubeApiSimulator], *, current: str | None = None) -> JSON:
    """A kubeconfig dict with one cluster, user and context per simulator, named after it."""
    sims = list(sims)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": s.name, "cluster": {"server": s.url}} for s in sims],
        "users": [{"name": f"{s.name}-user", "user": {"token": s.token}} for s in sims],
        "contexts": [
            {"name": s.name, "context": {"cluster": s.name, "user": f"{s.name}-user"}} for s in sims
        ],
        "current-context": current or (sims[0].name if sims else ""),
        "preferences": {},
    }


def write_kubeconfig(
    path: Path, sims: Iterable[KubeApiSimulator], *, current: str | None = None
) -> Path:
    path.write_text(yaml.safe_dump(kubeconfig(sims, current=current)))
    return path
