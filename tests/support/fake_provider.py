"""The fake LLM provider the tests use: the one the demo ships, in ``costspan.processor._demo.fake_provider``."""

from costspan.processor._demo.fake_provider import Behavior, FakeProvider, FakeUsage, RecordedRequest

__all__ = ["Behavior", "FakeProvider", "FakeUsage", "RecordedRequest"]
