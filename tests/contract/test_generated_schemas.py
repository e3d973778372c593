"""The schema files in schemas/ are generated from the declarations in services/contracts: a
checked-in file that differs from what its declaration generates fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.contracts import schemas
from services.contracts.events import DECLARED
from services.contracts.vocabulary import Event


@pytest.mark.parametrize("event", DECLARED, ids=lambda e: e.name)
def test_checked_in_schema_is_what_its_declaration_generates(event: Event) -> None:
    assert schemas.path_of(event).read_text(encoding="utf-8") == schemas.render(event), (
        f"{schemas.path_of(event)} is stale: python -m services.contracts.schemas")


def test_the_writer_finds_and_rewrites_a_stale_file(tmp_path: Path) -> None:
    for event in DECLARED:
        shutil.copy(schemas.path_of(event), tmp_path)
    assert schemas.stale(tmp_path) == []
    edited = schemas.path_of(DECLARED[0], tmp_path)
    edited.write_text(edited.read_text().replace('"maxLength": 256', '"maxLength": 255', 1))
    assert schemas.stale(tmp_path) == [edited]
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1
    assert schemas.write(tmp_path) == [edited]
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 0
    assert edited.read_text() == schemas.render(DECLARED[0])
