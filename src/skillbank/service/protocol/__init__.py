"""The multi-run protocol: ``paths`` (every path of the outputs folder, built in one
place), ``files`` (STABLE markers, staging, locks, the I/O thread; atomic writes are
``skillbank.io``), ``info`` (``OUT/trainer.json``), ``watch`` (the orchestrator's side:
waiting for broadcasts, noticing a run ended), ``rollout_io``, ``checkpoint`` and ``base``.
``paths``, ``files``, ``info`` and ``watch`` import no torch."""
