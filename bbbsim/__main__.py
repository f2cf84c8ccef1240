import sys

from bbbsim.cli import main

sys.exit(main())
