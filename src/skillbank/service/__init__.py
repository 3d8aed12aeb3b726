"""The multi-run training service: one trainer, one orchestrator per run, meeting only in
an outputs folder (see docs/service.md). ``paths`` builds every path of the protocol.

Nothing heavy is imported here: ``skillbank.cli.service`` must parse arguments before
torch is loaded.
"""
