"""The worker's role in (dis)aggregated serving: one enum, parsed once.

Dynamo spells the role three ways: `--disaggregation-mode agg|prefill|decode` (with the
aliases `pd`, `aggregated` and TRT-LLM's legacy `prefill_and_decode`), the deprecated
`--is-prefill-worker` / `--is-decode-worker` booleans, and the model card's
`worker_type` (`aggregated|prefill|decode`). `WorkerRole.parse` reads the flags;
`card_type` writes the card.
"""

from __future__ import annotations

import enum

from dynamo.llm.model_card import WorkerType

ALIASES = {"pd": "agg", "aggregated": "agg", "prefill_and_decode": "agg"}
MODE_CHOICES = ("agg", "prefill", "decode", *ALIASES)


class WorkerRole(enum.StrEnum):  # a StrEnum: "prefill", not "WorkerRole.PREFILL", in logs and f-strings
    AGG = "agg"
    PREFILL = "prefill"
    DECODE = "decode"

    @property
    def card_type(self) -> WorkerType:
        """The model card's `worker_type` for this role."""
        return WorkerType.AGGREGATED if self is WorkerRole.AGG else WorkerType(self.value)

    @property
    def default_component(self) -> str:
        """Dynamo's default component: prefill workers serve `prefill`, the rest `backend`."""
        return "prefill" if self is WorkerRole.PREFILL else "backend"

    @classmethod
    def parse(cls, mode: str, is_prefill_worker: bool = False, is_decode_worker: bool = False) -> "WorkerRole":
        """Effective role. The legacy booleans win over the default `agg`; they conflict
        with each other and with a different explicit mode (ValueError)."""
        try:
            role = cls(ALIASES.get(mode, mode))
        except ValueError:
            raise ValueError(f"--disaggregation-mode must be one of {MODE_CHOICES}, got {mode!r}") from None
        if is_prefill_worker and is_decode_worker:
            raise ValueError("--is-prefill-worker and --is-decode-worker are mutually exclusive")
        legacy = cls.PREFILL if is_prefill_worker else cls.DECODE if is_decode_worker else None
        if legacy is None:
            return role
        if role not in (cls.AGG, legacy):
            raise ValueError(f"--is-{legacy}-worker conflicts with --disaggregation-mode {mode}")
        return legacy
