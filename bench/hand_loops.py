"""The loops a user would write by hand around the same model, for loops_bench.py.

Each drains ``count`` requests from a topic into a result topic and exits:
  naive  consume(500), run each request alone, produce its result; flush, commit
  smart  consume(500), one model call for the whole poll, produce; flush, commit
Neither dedups nor dead-letters; both use torchkafka's codecs and the same
``ModelRuntime`` (preprocess, model, postprocess) as the worker, so the model
work is the same. Run as a process of its own:
python bench/hand_loops.py LOOP MODEL PREPROCESS POSTPROCESS INPUT OUTPUT COUNT
"""

from __future__ import annotations

import argparse
import os

import torch
from confluent_kafka import Consumer, Message, Producer
from e2e_harness import cpu_runtime

from torchkafka.codecs import Encoder, ModelInfo, Result, decode_request
from torchkafka.worker import kafka_bootstrap
from torchkafka.worker.model import ModelRuntime

POLL = 500


def drain(loop: str, model: ModelRuntime, source: str, sink: str, count: int) -> None:
    """Answer ``count`` requests of ``source`` on ``sink``, one model call per request
    (``naive``) or per poll (``smart``)."""
    bootstrap = kafka_bootstrap()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"hand-{loop}-{source}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    encoder = Encoder()
    info = ModelInfo(name=loop, version="1")
    consumer.subscribe([source])
    answered = 0
    while answered < count:
        messages = [m for m in consumer.consume(POLL, timeout=1.0) if m.error() is None]
        if not messages:
            continue
        requests = [decode_request(m.value() or b"") for m in messages]
        inputs = [torch.as_tensor(r.inputs["x"]) for r in requests]
        if loop == "naive":
            rows = [model.infer(x.unsqueeze(0))[0] for x in inputs]
        else:
            rows = model.infer(torch.stack(inputs))
        for message, request, outputs in zip(messages, requests, rows, strict=True):
            result = Result(id=request.id, outputs=outputs, model=info, meta=request.meta)
            publish(producer, sink, message, encoder.result(result))
        producer.flush()
        consumer.commit(asynchronous=False)
        answered += len(messages)
    consumer.close()


def publish(producer: Producer, topic: str, message: Message, value: bytes) -> None:
    """Produce, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=message.key())
            return
        except BufferError:
            producer.poll(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=("naive", "smart"))
    for name in ("model", "preprocess", "postprocess", "input", "output"):
        parser.add_argument(name)
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    model = cpu_runtime(args.model, args.preprocess, args.postprocess)
    print(f"ready {os.getpid()}", flush=True)
    drain(args.loop, model, args.input, args.output, args.count)


if __name__ == "__main__":
    main()
