"""Run the infer_resnet_torch workload; the same as `mlrepro infer-resnet-torch` or `nox -s infer_resnet_torch --`.

    python scripts/infer_resnet_torch.py --help
"""

import sys

from mlrepro.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer-resnet-torch", *sys.argv[1:]]))
