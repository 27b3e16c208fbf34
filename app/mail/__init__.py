"""Mail: messages, the backends that send them, and the outbox that makes sending survive crashes.

A feature that must mail someone stores an outbox entry (`outbox.py`) in the same request that
makes the thing the mail is about, and kicks the worker (`worker.py`); the worker composes the
message from the entry's non-secret reference, through the composer its kind registered, and
sends it through the configured backend (`backends.py`: SMTP, `.eml` files or the log). The API
answer never waits for a mail server; a mail that cannot be sent now is retried with backoff.
"""
