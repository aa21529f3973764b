"""``python -m medvq``: the ``medvq`` command (:mod:`medvq.cli`)."""

import sys

from medvq.cli import main

sys.exit(main())
