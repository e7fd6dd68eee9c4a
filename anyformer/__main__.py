"""``python -m anyformer``: the ``anyformer`` command."""

import sys

from anyformer.core.cli.main import main

sys.exit(main())
