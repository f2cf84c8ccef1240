"""``python -m bbbctl``."""

import sys

from bbbctl.cli import main

sys.exit(main())
