"""``python -m rayipy ...`` is the ``rayipy`` command."""

import sys

from rayipy.cli import main

sys.exit(main())
