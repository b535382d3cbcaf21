"""``python -m sweeps.cli``: the `pricer` command without its console script."""

from sweeps.cli.main import main

raise SystemExit(main())
