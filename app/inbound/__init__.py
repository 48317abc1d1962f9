"""Inbound upstream webhooks: verified updates apply at once, hints trigger one poll."""
