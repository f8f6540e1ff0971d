import sys

from msalign.cli import main

sys.exit(main())
