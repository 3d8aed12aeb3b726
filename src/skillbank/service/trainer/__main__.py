"""``python -m skillbank.service.trainer ARGS`` (and ``torchrun ... -m
skillbank.service.trainer ARGS``): the trainer's own entry point."""

import sys

from skillbank.service.trainer.main import main

sys.exit(main(sys.argv[1:]))
