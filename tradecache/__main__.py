"""`python -m tradecache` runs the command line."""

import sys

from tradecache.cli import main

sys.exit(main())
