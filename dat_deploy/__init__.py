"""dat-deploy: deploy DAT / DAT++ vision transformers with proven parity.

Importing this package is cheap: nothing here imports TensorRT, CUDA or matplotlib.
"""

__version__ = "0.1.0"
