"""Unit tests of the fault suite's own evaluation."""
