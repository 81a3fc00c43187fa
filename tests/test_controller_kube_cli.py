"""`fleetgate controller` in Kubernetes mode refuses release flags it cannot honour before it
connects anywhere (a real process: the command configures the process's logging)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--state", "s.json"], "--state is for file mode", id="state"),
        pytest.param(["--api", "0.0.0.0:8081"], "needs --tokens", id="public-api-without-tokens"),
    ],
)
def test_refused_before_connecting(tmp_path: Path, flags: list[str], message: str) -> None:
    argv = ["controller", "--hub-kubeconfig", str(tmp_path / "none"), *flags]
    done = subprocess.run(
        [sys.executable, "-m", "fleetgate", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
