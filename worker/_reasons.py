"""Dead-letter reasons decided by the worker (the codecs' ``Reason`` covers bad input)."""

from __future__ import annotations

from enum import StrEnum


class WorkerReason(StrEnum):
    """Why the worker dead-lettered a well-formed request. Values never change meaning."""

    EXPIRED = "expired"
    MODEL_ERROR = "model_error"
    UNUSABLE_INPUT = "unusable_input"
    INVALID_HEADERS = "invalid_headers"
    INTERNAL_ERROR = "internal_error"
    RESULT_TOO_LARGE = "result_too_large"
    QUARANTINED = "quarantined"
    UNREADABLE_RECORD = "unreadable_record"
