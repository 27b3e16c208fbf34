"""The database commands a request sends, seen with the driver's command monitoring."""

from __future__ import annotations

from pymongo import monitoring

# The mail worker, the event publisher and the webhook worker run in the background of the
# same process: their polls are not the request's.
BACKGROUND = frozenset(
    {"mail_outbox", "event_counters", "events", "event_outbox", "webhooks",
     "webhook_deliveries", "webhook_replays"}
)  # fmt: skip
# The authentication cache's change streams (opened, polled, closed in the background).
FEEDS = frozenset({"aggregate", "getMore", "killCursors"})


class RequestCommands(monitoring.CommandListener):
    """`seen`: (command, collection) of what is not background work, while `on`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.on = True

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.on or event.command_name in FEEDS:
            return
        collection = str(event.command.get(event.command_name))
        publisher_scan = "outbox_since_ms" in str(event.command.get("filter", ""))
        if collection not in BACKGROUND and not publisher_scan:
            self.seen.append((event.command_name, collection))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None
