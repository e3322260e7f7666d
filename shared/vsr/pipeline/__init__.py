"""The three pipeline stages (ingest, worker, assembly) and what they share: the job record, messages, events.

Each stage module exposes `handle_event(event, context) -> dict`, called by the thin Lambda handlers in
`services/*/handler.py` and by the local runtime's dispatchers with the same AWS-shaped events.
"""
