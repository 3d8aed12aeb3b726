"""The orchestrator of one run: ``main.run_orchestrator`` waits for the trainer, holds the
run's orchestrator lock, and hands the run to its kind's registered ``orchestrate``
(``kinds.ppo.orchestrate``, ``kinds.lm.orchestrate``). Torch-free at import."""
