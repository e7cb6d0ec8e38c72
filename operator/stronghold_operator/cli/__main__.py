"""``python -m stronghold_operator.cli``: the ``stronghold`` command (and the kubectl plugin)."""

import sys

from stronghold_operator.cli import main

sys.exit(main())
