"""Docker HEALTHCHECK for the demo app: its last commit is recent."""

import os
import sys
import time
from pathlib import Path

heartbeat = Path(os.environ.get("DEMO_HEARTBEAT", "/tmp/demo-heartbeat"))  # noqa: S108
sys.exit(0 if heartbeat.exists() and time.time() - heartbeat.stat().st_mtime < 30 else 1)
