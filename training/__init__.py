"""Training toolkit for sSWE models: simulation, datasets, training and evaluation."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
