"""The blocking client: send tensors one at a time and wait for each one's result.

python examples/python/blocking.py --count 5 --shape 3,224,224 --dtype uint8
"""

from __future__ import annotations

from settings import from_arguments

from torchkafka.client import Client, DeadLettered, RequestTimedOut


def main() -> None:
    pipeline, count = from_arguments(__doc__ or "")
    with Client(
        pipeline.connection,
        pipeline.input_topic,
        pipeline.output_topic,
        pipeline.dead_letter_topic,
        timeout_s=30,
    ) as client:
        for n in range(count):
            try:
                result = client.infer({"x": pipeline.random_input()}, meta={"n": n})
            except DeadLettered as error:  # the worker could not run it: reason and text
                print(f"{n}: dead-lettered: {error.reason}: {error.error}")
            except RequestTimedOut:  # no worker answered in time; the same id may be resent
                print(f"{n}: no result within 30 s")
            else:
                shapes = {name: list(tensor.shape) for name, tensor in result.outputs.items()}
                print(f"{n}: {result.id} {shapes} from {result.model.name}@{result.model.version}")


if __name__ == "__main__":
    main()
