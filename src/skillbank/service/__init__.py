"""The multi-run training service: one trainer, one orchestrator per run, meeting only in
an outputs folder (see docs/service.md).

- ``protocol/``: the outputs folder (``paths`` builds every path), its files, trainer
  info, rollouts, checkpoints;
- ``kinds/``: the run-kind registry (PPO and LM runs: config, check, orchestrate, read
  rollout, update);
- ``trainer/``: the trainer loop, the registry of live runs, slots, replicas over ranks;
- ``orchestrator/``: the entry point of one run's orchestrator;
- ``tools/``: runs table, convert-adapter, consolidate, library add.

Nothing heavy is imported here: ``skillbank.cli.service`` parses arguments before torch
is loaded.
"""
