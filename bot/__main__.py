"""`python -m bot` behaves as `treaty-bot`."""

import sys

from bot.cli import main

sys.exit(main())
