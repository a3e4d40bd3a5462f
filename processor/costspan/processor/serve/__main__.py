"""``python -m costspan.processor.serve [flags]``: ``costspan serve`` alone."""

import sys

from costspan.processor.serve._serve_cli import main

sys.exit(main())
