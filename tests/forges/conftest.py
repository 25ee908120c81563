"""Fixtures for the forge feedback tests (path filters, statuses, reconcile)."""

from __future__ import annotations

from tests.worker.conftest import sqlite_engine

__all__ = ["sqlite_engine"]
