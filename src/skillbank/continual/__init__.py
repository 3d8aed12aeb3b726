"""Continual RL: learn the tasks of a suite one after another and measure forgetting.

``skillbank continual`` trains a task sequence with one or more *strategies* (registered
classes in ``strategies/``), evaluates every task at a fixed interval, and reports the
Continual World metrics (``metrics.py``: average performance P, forgetting F, forward
transfer FT, the matrix R) with a bootstrap interval over seeds (``summary.py``), plus the
memory and wall time of each strategy, in ``results.json`` and ``report.html``.

This package imports nothing heavy at import time: ``skillbank.cli.continual`` must stay
cheap to import (the CLI parses arguments before torch is loaded).
"""
