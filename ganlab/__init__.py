"""ganlab: GAN hyperparameter and stability sweeps."""

__version__ = "0.1.0"
