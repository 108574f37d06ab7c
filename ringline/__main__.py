import sys

from ringline.cli import main

sys.exit(main())
