"""Matte engines: an alpha matte from an RGB photograph. Never imports ``emulator.vendors``."""
