"""Every declared event, in the order their schemas are listed (services.contracts.schemas
writes one file per entry)."""

from __future__ import annotations

from services.contracts.dead_letter import DEAD_LETTER
from services.contracts.inference import INFERENCE
from services.contracts.label import LABEL
from services.contracts.vocabulary import Event

DECLARED: tuple[Event, ...] = (INFERENCE, LABEL, DEAD_LETTER)
