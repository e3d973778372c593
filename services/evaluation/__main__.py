"""`python -m services.evaluation ...` = `active-stream bench label-efficiency ...`."""

import sys

from services.evaluation.cli import main

sys.exit(main())
