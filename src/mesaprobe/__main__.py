import sys

from mesaprobe.cli import main

sys.exit(main())
