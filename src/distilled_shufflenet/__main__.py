import sys

from distilled_shufflenet.cli import main

sys.exit(main())
