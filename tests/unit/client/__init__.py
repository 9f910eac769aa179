"""Unit tests of torchkafka.client."""
