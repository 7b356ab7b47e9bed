"""Run the train_resnet_tf workload; the same as `mlrepro train-resnet-tf` or `nox -s train_resnet_tf --`.

    python scripts/train_resnet_tf.py --help
"""

import sys

from mlrepro.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-resnet-tf", *sys.argv[1:]]))
