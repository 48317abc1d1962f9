"""Upstream emulators: faithful wire-protocol fakes served on loopback."""
