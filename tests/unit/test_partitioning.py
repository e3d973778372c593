"""The loop's partitioning rule (services/streaming/partitioning.py) is the Java client's."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.streaming.partitioning import KEYED_PARTITIONER, murmur2, murmur2_partition
from services.streaming.settings import KafkaSettings

# Expected values from Apache Kafka's own Utils.murmur2 tests (clients/.../UtilsTest.java).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", list(JAVA_VECTORS))
def test_murmur2_matches_the_java_client(key: bytes) -> None:
    assert murmur2(key) == JAVA_VECTORS[key]


def test_partition_matches_aiokafka_and_so_faust() -> None:
    rng = random.Random(7)
    partitioner = DefaultPartitioner()
    for _ in range(3000):
        key = rng.randbytes(rng.randrange(0, 48))
        n = rng.randrange(1, 97)
        assert murmur2_partition(key, n) == partitioner(key, list(range(n)), list(range(n)))


def test_every_producer_the_settings_build_hashes_keys_the_java_way() -> None:
    kafka = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "x:9092"})
    assert kafka.client(role="producer")["partitioner"] == KEYED_PARTITIONER == "murmur2_random"
    assert "partitioner" not in kafka.client(role="consumer")
    chosen = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "x:9092",
                                     "ACTIVE_STREAM_KAFKA_PARTITIONER": "consistent"})
    assert chosen.client(role="producer")["partitioner"] == "consistent"  # a user's choice wins


def test_no_partitions_is_an_error() -> None:
    with pytest.raises(ValueError):
        murmur2_partition(b"k", 0)
