"""imagefleet: serve generative image models on a pull-based fleet of cheap GPUs."""

__version__ = "0.1.0"
