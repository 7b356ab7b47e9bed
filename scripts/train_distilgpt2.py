"""Run the train_distilgpt2 workload; the same as `mlrepro train-distilgpt2` or `nox -s train_distilgpt2 --`.

    python scripts/train_distilgpt2.py --help
"""

import sys

from mlrepro.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-distilgpt2", *sys.argv[1:]]))
