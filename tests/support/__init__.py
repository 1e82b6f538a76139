"""Shared test servers (importable as `tests.support`)."""
