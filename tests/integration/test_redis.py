"""The Redis fixture gives a real server and a per-test key namespace."""

import redis


def test_redis_answers_and_keys_are_namespaced(redis_client: redis.Redis, key_prefix: str) -> None:
    assert redis_client.ping()
    pipe = redis_client.pipeline()
    pipe.set(key_prefix + "done:a", b"1", ex=60)
    pipe.set(key_prefix + "done:b", b"1", ex=60, nx=True)
    pipe.set(key_prefix + "done:b", b"2", ex=60, nx=True)
    assert pipe.execute() == [True, True, None]
    assert redis_client.get(key_prefix + "done:b") == b"1"
    assert 0 < redis_client.ttl(key_prefix + "done:a") <= 60
