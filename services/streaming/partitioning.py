"""Which partition a keyed record goes to: the rule every writer of the loop's keyed topics follows.

The label sink joins a label to its request only when both sit in the same partition number of
their topics (faust co-partitions the labels and requests topics: one worker owns partition p of
both, and its requests table holds the requests of partition p). Requests are written by the
scorer (librdkafka), labels by annotation tools and bridges (Java clients, aiokafka, faust,
kafka-python, librdkafka...). Those clients hash keys differently by default: librdkafka uses
CRC32 (`consistent_random`), the Java client, aiokafka and kafka-python use murmur2. So the rule
is **murmur2 of the key bytes, Java's way**, for every keyed topic of the loop:

- librdkafka clients (the scorer, our tools) set `partitioner=murmur2_random`
  (`KafkaSettings.client(role="producer")` does it unless a user sets another);
- Java, aiokafka, kafka-python and faust producers already do it by default;
- anything else computes `murmur2_partition(key, partitions)` and produces to that partition.

Records without a key may go anywhere (none of the loop's keyed topics has them).
"""

from __future__ import annotations

# librdkafka's name for "Java producer compatible murmur2 of the key; NULL keys random".
KEYED_PARTITIONER = "murmur2_random"

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of `data` (org.apache.kafka.common.utils.Utils.murmur2), as a signed
    32-bit int like Java's."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    full = length - length % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[full + 2] << 16
    if rest >= 2:
        h ^= data[full + 1] << 8
    if rest >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition the Java producer's default partitioner picks for `key` among
    `partitions` (Utils.toPositive(murmur2(key)) % partitions)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
