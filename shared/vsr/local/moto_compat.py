"""Make moto's DynamoDB linearizable like the real service (local runtime and tests only; never in Lambda).

Measured: moto server handles requests on threads and its DynamoDB backend has no lock, so two concurrent
conditional updates can both pass `NOT contains(done, :idx)` and both decrement `remaining` (8 threads
counting the same two segments: a double count in about 1 run in 6). Real DynamoDB evaluates a condition
and applies the update atomically. `serialize_dynamodb_writes()` wraps the backend's item operations in one
lock so moto gives the same guarantee; call it in the process that runs moto (in-process
`ThreadedMotoServer`), or start a server process with `python -m vsr.local.moto_compat -H 127.0.0.1 -p PORT`
(the same arguments as `python -m moto.server`).
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

_OPERATIONS = ("put_item", "get_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_lock = threading.RLock()
_patched = False


def serialize_dynamodb_writes() -> None:
    """Idempotent: wrap moto's DynamoDB item operations in one process-wide lock."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _lock:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)
    _patched = True


def main(argv: list[str] | None = None) -> None:
    serialize_dynamodb_writes()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
