"""`python -m skillbank.cli VERB ...` = `skillbank VERB ...`."""

from skillbank.cli.main import main

raise SystemExit(main())
