"""TensorRT engines for DAT / DAT++: building (`build.py`), the Triton artifacts around a plan, and
the lazy import of TensorRT itself. Nothing here imports `tensorrt` at import time."""
