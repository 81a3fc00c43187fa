"""Release notifications: a JSON POST to a webhook on every phase change (HTTP client I/O).

`send` never waits: it puts the event on a bounded queue and returns, so a slow or dead webhook
can never hold up the release loop. One worker posts the events in order, each with a timeout;
a failed post is logged and dropped (no retries: the next phase change follows soon, and the
release status always has the truth). When the queue is full the newest event is dropped and
counted.

Payload (one object per event; `type` lets a receiver route several fleetgate event kinds)::

    {"type": "release.phase", "release": "shop/web-v2", "phase": "Aborted",
     "previous": "Progressing", "reason": "analysis_failed", "message": "...", "at": 1767000000.0}
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import aiohttp

from policies.release_state import Notify

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class NotifySettings:
    """Webhook notifications (controller process settings)."""

    url: str | None = None  # None: notifications off
    timeout_s: float = 5.0  # per POST, connection included
    queue_size: int = 256  # events waiting to be posted; more are dropped
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers, e.g. an Authorization


def payload(event: Notify) -> dict[str, Any]:
    """The JSON body posted for `event`."""
    return {
        "type": "release.phase",
        "release": event.release,
        "phase": event.phase.value,
        "previous": event.previous.value if event.previous is not None else None,
        "reason": event.reason,
        "message": event.message,
        "at": event.at,
    }


class Notifier:
    """Posts release events to the webhook. Run `run()` in a TaskGroup; `send` from anywhere on
    the loop."""

    def __init__(self, settings: NotifySettings | None = None) -> None:
        self.settings = settings or NotifySettings()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(
            maxsize=max(1, self.settings.queue_size)
        )
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def send(self, event: Notify) -> None:
        """Queue `event` for posting; returns at once."""
        if self.settings.url is None:
            return
        try:
            self._queue.put_nowait(payload(event))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("notification queue full; dropped release=%s", event.release)

    async def run(self) -> None:
        """Post queued events until cancelled (a no-op loop when no URL is configured)."""
        url = self.settings.url
        if url is None:
            await asyncio.Event().wait()  # nothing to do; still a task its owner can cancel
            return
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                body = await self._queue.get()
                await self._post(session, url, body)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=body, headers=dict(self.settings.headers)) as resp:
                if resp.status >= 300:
                    self.failed += 1
                    log.warning(
                        "webhook answered %d release=%s phase=%s",
                        resp.status,
                        body["release"],
                        body["phase"],
                    )
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed += 1
            log.warning("webhook post failed release=%s error=%r", body["release"], exc)
            return
        self.sent += 1
