import sys

from .cli import main

if __name__ == "__main__":  # workers start with spawn and re-import __main__
    sys.exit(main())
