"""``python -m glrzoo``: the console script, for environments without the ``glrzoo`` entry point."""
import sys

from glrzoo.cli import main

sys.exit(main())
