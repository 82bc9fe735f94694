"""``python -m scorer``: the ``scorer`` command line."""

from scorer.cli import main

raise SystemExit(main())
