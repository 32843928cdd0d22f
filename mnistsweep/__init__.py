"""mnistsweep: grids of the classic Keras MNIST tutorials, run locally or on SLURM, and reported."""

__version__ = "0.1.0"
