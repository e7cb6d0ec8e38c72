"""``python -m stronghold_testbed``: the same as the ``stronghold-testbed`` command."""

import sys

from stronghold_testbed.cli import main

sys.exit(main())
