"""``python -m msalign.cli`` is the ``msalign`` command."""

import sys

from msalign.cli import main

sys.exit(main())
