import sys

from app.plugin.cli import main

sys.exit(main())
