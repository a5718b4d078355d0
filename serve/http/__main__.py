"""`python -m serve.http`: the same as `python -m serve http` and the `seqlstm-server` console script."""

import sys

from serve.http.cli import main

if __name__ == "__main__":
    sys.exit(main())
