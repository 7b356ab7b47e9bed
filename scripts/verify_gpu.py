"""Run the verify_gpu workload; the same as `mlrepro verify-gpu` or `nox -s verify_gpu --`.

    python scripts/verify_gpu.py --help
"""

import sys

from mlrepro.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify-gpu", *sys.argv[1:]]))
