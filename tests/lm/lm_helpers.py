"""Shared test settings for tests/lm."""

from __future__ import annotations

from skillbank.lm.model import ArchConfig

TINY = ArchConfig(hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64, max_len=40)
