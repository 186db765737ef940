"""``python -m panoptic_depthlab_training.train``: the ``train`` command on its own."""

import logging
import sys

from .command import get_args_parser, main

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
parser = get_args_parser()
parser.prog = "python -m panoptic_depthlab_training.train"
sys.exit(main(parser.parse_args()))
