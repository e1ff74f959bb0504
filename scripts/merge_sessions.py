"""Record the earlier session of a run that was resumed before ``metrics.json`` kept a ``sessions`` list.

Usage: python scripts/merge_sessions.py EARLIER_METRICS.json RUN_DIR/metrics.json

EARLIER_METRICS.json is a copy of the run's metrics.json from before the resume (the resumed command overwrote it).
The run's metrics.json then lists both commands with their epochs, machines and wall-clock times, as the CLI now
does by itself for every ``--resume``.
"""

import json
import sys
from pathlib import Path

from dgmlab.checkpoints import atomic_write_json
from dgmlab.cli import with_sessions
from dgmlab.reporting import sessions_of

if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    earlier, current_path = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    current = json.loads(current_path.read_text())
    if "sessions" in current:
        raise SystemExit(f"{current_path} already lists its sessions")
    if earlier.get("epochs_done", 0) >= current.get("epochs_done", 0):
        raise SystemExit("the earlier metrics must describe fewer epochs than the current ones")
    current.update(with_sessions(earlier, sessions_of(current)[0]))
    atomic_write_json(current_path, current)
    print(json.dumps(current["sessions"], indent=2))
