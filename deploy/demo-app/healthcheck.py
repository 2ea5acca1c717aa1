"""Docker HEALTHCHECK for the demo app: GET /health answers 200 (it committed lately and can
read what its version needs, e.g. v2's new columns)."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('DEMO_PORT', '3000')}/health"
try:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a fixed http URL)
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:  # refused, timed out, or HTTP 503 (an HTTPError is an OSError)
    print(exc)
    sys.exit(1)
