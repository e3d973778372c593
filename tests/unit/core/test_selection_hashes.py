"""The byte-identity net (bench/selection_hashes.py): what `select` decides and the state it
keeps, on fixed streams, are pinned by digest. A change meant to leave every pick and every
snapshot byte for byte as they were (a refactor, a vectorised path) must leave these equal.

Pinned at main 53de13a (before the vectorised selection), numpy 2.x on x86_64 Linux. numpy's
float arithmetic is deterministic for one build, but a digest is a function of every float
bit, so another platform or numpy build may move one: rerun the script there before trusting
a difference (the invariance tests say whether decisions still agree with themselves).
"""

from __future__ import annotations

import pytest

from bench.selection_hashes import streams

# stream -> (picks digest, snapshots digest, number of picks): the first 64 bits, in hex
PINNED = {
    "invariance/default/1000": ("8e7dad8045f2965d", "19304a09e61422ff", 68),
    "invariance/default/37": ("0d007b8262b229bc", "a76376c81206f124", 67),
    "invariance/reservoir/1000": ("bc7fc5d883369d5a", "dddfdc9c5555595d", 376),
    "invariance/reservoir/37": ("74c4e0283309a29f", "a7af66e7e8d52bd9", 345),
    "invariance/active/1000": ("c75298f54ef1a94d", "7c9d580ece945035", 580),
    "invariance/active/37": ("fa11646d589ef514", "fe3394260b2a3a0d", 577),
    "invariance/fixed_lru/1000": ("d2196a58259269d2", "9c46dfdf46485f47", 580),
    "invariance/fixed_lru/37": ("0739a46cb7aaad9a", "2ced3ec4d697e3e9", 577),
    "invariance/model_churn/1000": ("73526956c624e6a8", "81a18ed8089a1b44", 579),
    "invariance/model_churn/37": ("c62ac27bf53a7cb2", "35c464e5674ba19e", 575),
    "invariance/reservoir_churn/1000": ("d7ff6c87f481e880", "3ebbb782e7306b69", 68),
    "invariance/reservoir_churn/37": ("9b572aa84e9a5ba5", "94f1520de1e11f00", 67),
    "invariance/adaptive_power/1000": ("0d73bcdbee012ec2", "eb22806233e7b878", 68),
    "invariance/adaptive_power/37": ("14c6fb8b1d79db55", "783cc3f493f114dc", 67),
    "invariance/novelty/1000": ("c860f9fc490561f5", "6003a543e49a585c", 68),
    "invariance/novelty/37": ("b4b1f9209944ebb9", "1bf9dea7fd6467f6", 67),
    # added with the option (novgate branch), not a change of an existing pin
    "invariance/novelty_gate/1000": ("c01068365d6aa1ff", "c7bee5d7947b2e9b", 68),
    "invariance/novelty_gate/37": ("98e4e050f49475c5", "1e8c2964a591c8ba", 67),
    "bench/default": ("7fdfbfaddc0c33b4", "2285501d71320653", 104),
    "bench/share_bound": ("db7b748faa6c69d2", "68f2dba107d84daf", 4_008),
    "bench/reservoir60": ("0bb199c2df8a72b0", "4c36a71fc3bca518", 5_994),
    "bench/default_4_objects": ("17e2e4e32c015b2c", "7cb3769cdeff32a5", 56),
    "bench/default_odd_batches": ("e1bb556da7f8940d", "98e35b96491f9173", 65),
    "synthetic/default": ("b343cc26076f5a85", "b99081d783879a91", 127),
    "synthetic/threshold": ("6561bb8ce503af4c", "639a1856f3c79fe4", 128),
    "synthetic/tiers": ("dfced8e4b142f873", "ebf06038e489f5da", 128),
    "drift/default": ("54f9fb25a284fb07", "feb67574eaa3beda", 1_207),
    "redundancy/reservoir": ("9a275aa2268da936", "1b2163f63872659e", 18),
    "tracks/reservoir": ("c0793e48c37847bd", "fcd935aa2a0e2e53", 82),
    "instances/reservoir": ("25be11e97773187b", "4ffca5c2b752b4c8", 192),
    "redundancy/threshold": ("8af65e90c6af6b93", "99383d57718e2b19", 79),
    "tracks/threshold": ("32c96c89a5806b07", "6f3a3c3a23c58d88", 82),
    "instances/threshold": ("dbd5c7c973af9e4c", "094fde9898c6d26b", 232),
    "partitions/0_of_16": ("0192e02f75b360bb", "152bee19a05bcc36", 20),
    "partitions/5_of_16": ("8d741e656ae80aaa", "2b6bba8e7c393993", 20),
}


def test_every_stream_is_pinned() -> None:
    assert set(streams()) == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_selection_is_byte_identical(name: str) -> None:
    assert streams()[name]() == PINNED[name]
