import sys

from offline_tools.cli import main

sys.exit(main())
