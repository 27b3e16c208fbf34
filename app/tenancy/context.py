"""What every multi-step operation needs besides its stores, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.kit.events import EventHook
from app.kit.faults import FaultInjector
from app.kit.settings import Settings


@dataclass(slots=True)
class OperationContext:
    """The settings, this process's identity, the fault hook and the event hook."""

    settings: Settings
    owner: str  # this process's identity, recorded on the operations it holds
    fault: FaultInjector
    events: EventHook = field(default_factory=EventHook)  # where the steps' events go
