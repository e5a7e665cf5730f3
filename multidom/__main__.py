"""``python -m multidom ...`` (and ``accelerate launch -m multidom train --config ...``): the CLI."""
import sys

from multidom.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
