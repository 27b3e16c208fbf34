"""The webhooks feature's parts, as the composition root (`app.wiring`) builds and runs them.

(Placeholder interface: the delivery worker, endpoints and signing are built behind it.)
"""

from __future__ import annotations

from app.audit.service import AuditService
from app.events.store import EventStore
from app.kit.metrics import Metrics
from app.kit.settings import Settings
from app.kit.store import Database


class Webhooks:
    """Endpoints, deliveries and the delivery worker of one process."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        events: EventStore,
        metrics: Metrics,
        audit: AuditService,
        owner: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.events = events
        self.metrics = metrics
        self.audit = audit
        self.owner = owner

    async def ensure_indexes(self) -> None:
        """Create this feature's indexes (start-up)."""

    def start(self) -> None:
        """Start the delivery worker (lifespan start)."""

    async def stop(self) -> None:
        """Stop the delivery worker (lifespan end), letting an attempt in flight finish."""

    def kick(self) -> None:
        """New events were published: look for deliveries now rather than at the next tick."""
