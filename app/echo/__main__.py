import sys

from app.echo.cli import main

sys.exit(main())
