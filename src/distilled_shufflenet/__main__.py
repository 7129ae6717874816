import sys

from distilled_shufflenet.cli import main

if __name__ == "__main__":
    sys.exit(main())
