"""The pure core: bytes in, typed events, validation, detection rules, alerts out.

No Kafka, Faust, network or event loop here (tests/test_layout.py checks it): every function
is deterministic and driven by event time, so the worker, `scan`, `replay --in-memory` and
the lookups all run this same code. May import only the standard library, msgspec, orjson
and other modules of streams.core.
"""
