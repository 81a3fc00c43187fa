"""Install the Debian packages the harness drives (apt-get; needs root) without starting their
packaged services: nginx and HAProxy run only as the harness's own pinned processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

# binary -> Debian package
TOOLS = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "taskset": "util-linux"}
# invoke-rc.d consults this script; exit status 101 means "action forbidden", so package scripts
# do not start nginx or haproxy on the machine's port 80 (see /usr/share/doc/init-system-helpers).
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_APT_TIMEOUT_S = 900


class InstallError(RuntimeError):
    pass


def missing_tools(tools: Sequence[str]) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def ensure_tools(tools: Sequence[str], *, log: bool = True) -> None:
    """Install the packages of the missing `tools` with apt-get (update first, quietly)."""
    missing = missing_tools(tools)
    if not missing:
        return
    packages = sorted({TOOLS[tool] for tool in missing})
    if os.geteuid() != 0:
        raise InstallError(
            f"missing {', '.join(missing)}; run as root or: apt-get install {' '.join(packages)}"
        )
    if log:
        print(f"installing {' '.join(packages)} (apt-get; packaged services are not started)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    guard = not POLICY_RC_D.exists()
    if guard:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# written by fleetgate benchmarks; removed after\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
    try:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=_APT_TIMEOUT_S
            )
            if done.returncode != 0:
                raise InstallError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    finally:
        if guard:
            POLICY_RC_D.unlink(missing_ok=True)
    still = missing_tools(tools)
    if still:
        raise InstallError(f"still missing after apt-get: {', '.join(still)}")
