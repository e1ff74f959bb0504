"""Copy finished CLI runs into dgmlab/pretrained/ (model weights + metrics.json, no optimiser state).

Usage: python scripts/export_pretrained.py runs/adgm-mnist100:adgm-mnist100 runs/sdgm-mnist100:sdgm-mnist100
"""

import sys

from dgmlab.pretrained import export_run

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for item in sys.argv[1:]:
        run, _, name = item.partition(":")
        print(export_run(run, name or run.rstrip("/").split("/")[-1]))
