import sys

from astrogen.cli import main

sys.exit(main())
