"""NoDedup (``--dedup off``): every id is claimed and renewed; nothing is remembered."""

from __future__ import annotations

from torchkafka.worker.pipeline import Claims, NoDedup


def test_every_id_is_held_and_none_is_ever_done() -> None:
    dedup = NoDedup()
    assert dedup.claim(["a", "b"], "w1", 1) == Claims(done=set(), held={"a", "b"})
    dedup.mark_done(["a"], "w1", 1)
    assert dedup.claim(["a"], "w2", 2) == Claims(done=set(), held={"a"}), "a is answered again"
    assert dedup.renew(["a", "b"], "w1", 1) == {"a", "b"}
    dedup.release(["b"], "w1")
