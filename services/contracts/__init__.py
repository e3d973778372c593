"""Event contracts, each declared once (issue 19, item 1).

An event is a `vocabulary.Event`: a `Record` of `Field`s whose kinds carry the limits. From that
declaration come the JSON Schema file in schemas/ (`python -m services.contracts.schemas`), the
decoder's checks and reason codes, and the field sets and limits the batch decoder reads. See
`services.contracts.vocabulary` for how to declare one, `services.contracts.inference` for an
example, and `services.contracts.events.DECLARED` for the list the schema writer walks.
"""
