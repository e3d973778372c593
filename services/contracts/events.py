"""Every declared event, in the order their schemas are listed (services.contracts.schemas
writes one file per entry)."""

from __future__ import annotations

from services.contracts.annotation_request import ANNOTATION_REQUEST
from services.contracts.class_feedback import CLASS_FEEDBACK
from services.contracts.dead_letter import DEAD_LETTER
from services.contracts.inference import INFERENCE
from services.contracts.label import LABEL
from services.contracts.retrain_trigger import RETRAIN_TRIGGER
from services.contracts.vocabulary import Event

DECLARED: tuple[Event, ...] = (INFERENCE, ANNOTATION_REQUEST, LABEL, RETRAIN_TRIGGER,
                               CLASS_FEEDBACK, DEAD_LETTER)
