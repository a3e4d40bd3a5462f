"""``python -m costspan.processor``: the ``costspan`` command line."""

import sys

from costspan.processor.serve._cli import main

sys.exit(main())
