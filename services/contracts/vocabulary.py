"""The declaration vocabulary: field kinds with their limits, records of fields, and events.

An event is declared once, as an `Event` holding a `Record` of `Field`s, each field a `Kind`
(`Text`, `ClassName`, `Number`, `Integer`, `Flag`, `Version`, `Array`, `BBox`, `Distribution`,
`FreeForm`, the tokens `Pattern`, `Enum`, `Const` of `services.contracts.tokens`, the output
events' `Bool`, `Choice`, `IdOrIndex`, `ClassMap` of `services.contracts.choices`, a nested
`Record`, or a `Shared` definition of one of these). A `Record` may also be `plain` (decoded
into a dict, for free-form-looking parts such as `reason.track`), order two of its numbers
(`less_or_equal`, the schemas' `x-less-or-equal`) or carry `Variants` (a tag field naming the
payload field allowed with it: class feedback's `kind`). From that one value come, with nothing
restated:

- its JSON Schema (`Event.json_schema()`, written to schemas/ by `services.contracts.schemas`),
  `Shared` kinds becoming `$defs` of the event that owns them and `$ref`s everywhere else;
- its decoder's checks (`Kind.reader`): closures over the limits, built once at import, that
  call the checked readers of `services.streaming.event_fields` and so raise the same
  `InvalidEvent` (field path, `ErrorCode`, detail) the hand-written decoders raised;
- the field sets and limits other code reads (`Record.names`, `Record.required`, a kind's
  attributes), e.g. the scorer's batch decoder;
- its encoder (`Event.encode`: typed object -> deterministic bytes, optional fields holding
  their kind's `absent` value left out), compiled like the reader (`codegen.compile_encoder`).

To declare an event: write its typed form (a frozen dataclass whose fields are the record's),
its `Record` of `Field`s (required unless `required=False`; `Shared` kinds for definitions other
schemas reference), the `Event` with its schema's prose, add it to `events.DECLARED`, and run
`python -m services.contracts.schemas`. `services.contracts.inference` is the worked example.
The kinds live in `kinds` (base, scalars), `containers`, `choices`, `tokens`, `shapes` (a
record's declaration: `Field`, `Variants`) and `records` (`Record`, `Event`); this module gathers
them. Layers, lowest first: `kinds`; `shapes`; `codegen` (compiles a shape's reader and encoder,
knowing kinds only through the `Kind` interface); `records`; the other kinds and the events.

A `Reader` takes (value, parent path, key) and returns the checked value or raises
`InvalidEvent`; it joins the path only when a check fails, so a valid event pays for no path
formatting. A reader is built per `ascii_only` (the payload was ASCII, so string lengths are
UTF-8 sizes and class names need no byte count).

Adding to this vocabulary is fine; changing what an existing kind means is not: other events'
declarations (and their checked-in schemas) rely on it.
"""

from services.contracts.choices import Bool, Choice, ClassMap, IdOrIndex
from services.contracts.containers import Array, BBox, Distribution, FreeForm
from services.contracts.kinds import (
    DRAFT,
    SCHEMA_BASE,
    ClassName,
    Flag,
    Integer,
    Kind,
    Number,
    Reader,
    Shared,
    Text,
    Version,
    _types,
    schema_id,
)
from services.contracts.records import Event, Record
from services.contracts.shapes import Field, Variants

__all__ = [
    "DRAFT", "SCHEMA_BASE", "Array", "BBox", "Bool", "Choice", "ClassMap", "ClassName",
    "Distribution", "Event", "Field", "Flag", "FreeForm", "IdOrIndex", "Integer", "Kind",
    "Number", "Reader", "Record", "Shared", "Text", "Variants", "Version", "_types", "schema_id",
]
