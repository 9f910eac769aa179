"""The torchkafka worker: composes codecs and topology with Kafka and Redis.

This package holds the entry points; the worker's data path is added on top
of the codecs (wire format) and topology (topics) packages.
"""
