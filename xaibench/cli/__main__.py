"""``python -m xaibench.cli``: the ``xaibench`` command."""

import sys

from xaibench.cli import main

sys.exit(main())
