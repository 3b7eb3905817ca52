"""Makes the streamer test kit (``streamer_kit.py``, test-only) importable by the tests beside it."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
