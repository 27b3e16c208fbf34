"""The audit log: router, service and repository."""
