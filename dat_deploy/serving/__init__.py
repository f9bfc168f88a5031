"""`dat-deploy serve`: Triton's own server (the binary that nvidia-pytriton ships) on dat-deploy's repository.

    distribution.py          finds the bundled server; the backend folder; the environment the stubs need
    repository.py            the repository: `dat-deploy triton`'s models with serving settings, image companions
    server.py                start, wait until ready, pass SIGTERM on, clean up
    triton_models/           the Python files Triton runs: the `onnxruntime` backend, the image classifier
"""
