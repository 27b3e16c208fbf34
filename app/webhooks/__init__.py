"""Webhooks: endpoints that receive every published event, signed per Standard Webhooks."""
