"""Helpers for testing against the emulator: a threaded server, composites with exact masks."""
