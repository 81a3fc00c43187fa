"""Per-worker request shares from two scrapes of a Prometheus text exposition. Pure.

The hook for `--workers N`: fleetgate's admin `/metrics` adds up across workers; if a requests
counter also carries a worker label, the increase of each worker's series between the scrape
before and the scrape after a run is that worker's share of the run's requests.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def counter_by_label(text: str, metric: str, label: str) -> dict[str, float]:
    """Sum of every `metric` sample (any other labels) per value of `label`."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (metric, f"{metric}_total") or label not in sample.labels:
                continue
            key = sample.labels[label]
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def worker_shares(before: str, after: str, *, metric: str, label: str) -> dict[str, float] | None:
    """Each worker's share of the requests counted between two scrapes; None when the metric or
    label is absent or nothing was counted."""
    start = counter_by_label(before, metric, label)
    end = counter_by_label(after, metric, label)
    deltas = {k: v - start.get(k, 0.0) for k, v in end.items()}
    total = sum(deltas.values())
    if not deltas or total <= 0:
        return None
    return {k: deltas[k] / total for k in sorted(deltas)}
