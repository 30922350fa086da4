import sys

from slidesparse.cli import main

sys.exit(main())
