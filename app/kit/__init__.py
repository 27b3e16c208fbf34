"""The shared kit: settings, errors, the database client and the embedded store, store types,
the HTTP edge and request context, logs, metrics and test-only fault injection."""
