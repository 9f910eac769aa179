"""The streaming use: send many requests at once, then read outcomes as they come.

No future is waited on: ``results()`` yields every result and dead letter
published since the client started (any producer's), so this one keeps its
own by id prefix and stops when each of its requests has its outcome.

    python examples/python/streaming.py --count 100 --shape 3,224,224 --dtype uint8
"""

from __future__ import annotations

import uuid

from settings import from_arguments

from torchkafka.client import Client, DeadLettered, Submission


def main() -> None:
    pipeline, count = from_arguments(__doc__ or "")
    run = uuid.uuid4().hex[:8]
    with (
        Client(
            pipeline.connection,
            pipeline.input_topic,
            pipeline.output_topic,
            pipeline.dead_letter_topic,
        ) as client,
        client.results() as outcomes,
    ):
        client.submit_many(
            [Submission({"x": pipeline.random_input()}, id=f"{run}-{n}") for n in range(count)]
        )
        waiting = {f"{run}-{n}" for n in range(count)}
        for outcome in outcomes:
            if isinstance(outcome, DeadLettered):
                request_id, text = outcome.request_id, f"dead-lettered: {outcome.reason}"
            else:
                request_id, text = outcome.id, f"outputs {sorted(outcome.outputs)}"
            if request_id in waiting:
                waiting.discard(request_id)
                print(f"{request_id}: {text}")
            if not waiting:
                break
    print(f"{count} outcomes")


if __name__ == "__main__":
    main()
