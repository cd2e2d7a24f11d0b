"""The analyzer fixtures of the API tests, for end-to-end scenarios."""

from tests.integration.api.conftest import analyzer_at, fresh_graph

__all__ = ["analyzer_at", "fresh_graph"]
