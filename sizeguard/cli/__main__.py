"""``python -m sizeguard.cli``: the same as the ``sizeguard`` command."""

import sys

from sizeguard.cli import main

sys.exit(main())
