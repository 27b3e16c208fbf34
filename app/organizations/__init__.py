"""The organization: its router, service, repository and schemas."""
