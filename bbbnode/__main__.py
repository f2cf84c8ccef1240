import sys

from bbbnode.cli import main

sys.exit(main())
