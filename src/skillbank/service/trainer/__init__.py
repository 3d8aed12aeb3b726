"""The multi-run trainer: ``loop`` (the Trainer), ``registry`` (the runs it serves),
``slots`` and ``replicas`` (slot operations, on every rank), ``dist`` (torch.distributed),
``base`` and ``config`` (trainer.toml), ``main`` (its command line).

``python -m skillbank.service.trainer --config trainer.toml`` (the torchrun target) runs
``main``. Nothing heavy is imported here: the CLI imports ``main`` and ``config`` before
torch is loaded."""
