"""Vendor-neutral core: jobs, clock, inputs, files, billing. Never imports ``emulator.vendors``."""
