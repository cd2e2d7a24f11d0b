"""The stores' bounded memory (cache.py)."""

from skygraph.topology.cache import LRU


def test_the_least_recently_used_key_is_forgotten_first():
    lru: LRU[int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert len(lru) == 2


def test_put_none_forgets_and_clear_forgets_all():
    lru: LRU[str] = LRU(10)
    lru.put("a", "x")
    lru.put("b", "y")
    lru.put("a", None)
    assert lru.get("a") is None and lru.get("b") == "y"
    lru.clear()
    assert len(lru) == 0 and lru.get("b") is None
