import sys

from blastscope.cli import main

sys.exit(main())
