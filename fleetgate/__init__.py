"""The `fleetgate` CLI and the embedded composition root: the only package importing both planes."""
