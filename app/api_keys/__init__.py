"""Service API keys: service and repository."""
