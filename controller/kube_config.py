"""Making a `controller.kube.ClusterClient`: from a kubeconfig (a file, a dict, or the one a
MemberCluster's Secret holds) or from the in-cluster ServiceAccount. I/O: local files (the
kubeconfig, the ServiceAccount token and CA); no request to a cluster.

Apart from `controller.kube` because it is a different job with different failures: kube.py talks
to an API server and translates its answers, this module only loads client configuration, and
everything that can go wrong here is an unusable configuration (`errors.ConfigError`), found
before any cluster is contacted. It imports kubernetes_asyncio's `config` loaders for that (the
import-linter contract lists it); the clients it builds are used only through kube.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from controller import errors
from controller.kube import ClusterClient, KubeSettings


async def connect(
    cluster: str,
    kubeconfig: Path | Mapping[str, Any],
    *,
    context: str | None = None,
    settings: KubeSettings | None = None,
) -> ClusterClient:
    """A client for `cluster` from a kubeconfig file or dict (its current context by default).
    The file is never written back (no token persistence)."""
    try:
        if isinstance(kubeconfig, Path):
            api = await config.new_client_from_config(
                config_file=str(kubeconfig), context=context, persist_config=False
            )
        else:
            api = await config.new_client_from_config_dict(
                config_dict=dict(kubeconfig), context=context
            )
    except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise errors.ConfigError(f"kubeconfig for cluster {cluster!r} is unusable: {exc}") from exc
    return ClusterClient(cluster, api, settings or KubeSettings())


async def connect_in_cluster(
    cluster: str, *, settings: KubeSettings | None = None
) -> ClusterClient:
    """A client for the cluster this process runs in (its ServiceAccount token and CA)."""
    configuration = client.Configuration()
    load: Any = config.load_incluster_config  # untyped in kubernetes_asyncio
    try:
        load(client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise errors.ConfigError(f"not running in a cluster: {exc}") from exc
    return ClusterClient(cluster, client.ApiClient(configuration), settings or KubeSettings())


def kubeconfig_from_secret(data: Mapping[str, bytes], key: str = "kubeconfig") -> Mapping[str, Any]:
    """The kubeconfig dict a MemberCluster's Secret holds under `key`."""
    try:
        parsed = yaml.safe_load(data[key])
    except (KeyError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"secret has no usable {key!r}: {exc}") from exc
    if not isinstance(parsed, Mapping):
        raise errors.ConfigError(f"secret key {key!r} is not a kubeconfig mapping")
    return parsed
