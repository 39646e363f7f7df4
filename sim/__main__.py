"""``python -m sim``: the same commands as the ``sim`` console script."""

from sim.cli import main

raise SystemExit(main())
