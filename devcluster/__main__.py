"""Entry point: `python -m devcluster COMMAND` (see devcluster/cli.py)."""

from __future__ import annotations

import sys

from devcluster.cli import main

sys.exit(main())
