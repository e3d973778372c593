"""Writes the JSON Schema files in schemas/ from the event declarations (services/contracts).

Run `python -m services.contracts.schemas` after changing a declaration (or `--check`, which
writes nothing and exits 1 naming each stale file); tests/contract/test_generated_schemas.py
fails while a checked-in file differs from what its declaration generates. The files are
generated: edit the declaration, never the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.contracts.events import DECLARED
from services.contracts.vocabulary import Event

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render(event: Event) -> str:
    """The schema file's text: 2-space JSON, UTF-8 as is, keys in declaration order."""
    return json.dumps(event.json_schema(), indent=2, ensure_ascii=False) + "\n"


def path_of(event: Event, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{event.name}.schema.json"


def stale(directory: Path = SCHEMA_DIR) -> list[Path]:
    """The files under `directory` that differ from their declarations (or are missing)."""
    return [path_of(e, directory) for e in DECLARED
            if not path_of(e, directory).is_file()
            or path_of(e, directory).read_text(encoding="utf-8") != render(e)]


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every declared event's schema file that is stale; returns those written."""
    written = stale(directory)
    for event in DECLARED:
        if path_of(event, directory) in written:
            path_of(event, directory).write_text(render(event), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file is stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="the schemas directory")
    args = parser.parse_args(argv)
    if args.check:
        found = stale(args.dir)
        for path in found:
            print(f"stale: {path} (python -m services.contracts.schemas)")
        return 1 if found else 0
    for path in write(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
