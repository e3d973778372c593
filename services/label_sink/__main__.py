"""`python -m services.label_sink` = `active-stream label-sink`."""

import sys

from services.cli import main

sys.exit(main(["label-sink", *sys.argv[1:]]))
