"""The dedup store of ``--dedup off``: it remembers nothing, so no Redis is needed."""

from __future__ import annotations

from collections.abc import Sequence

from torchkafka.worker.pipeline._dedup import Claims


class NoDedup:
    """A ``Dedup`` under which every id is claimed at once and none is ever done.

    The worker is then at-least-once without dedup: a redelivered record (after
    a crash or a rebalance) or a resubmitted request is answered again. Copies
    of one id within a poll, or of an id still running in this worker, are
    still answered once (the gate skips or parks them before it asks).
    """

    def claim(self, ids: Sequence[str], owner: str, fencing_token: int) -> Claims:
        """Every id is held by ``owner``; none is done."""
        return Claims(done=set(), held=set(ids))

    def renew(self, ids: Sequence[str], owner: str, fencing_token: int) -> set[str]:
        """Every claim holds."""
        return set(ids)

    def mark_done(self, ids: Sequence[str], owner: str, fencing_token: int) -> None:
        """Nothing to remember."""

    def release(self, ids: Sequence[str], owner: str) -> None:
        """Nothing to give up."""
