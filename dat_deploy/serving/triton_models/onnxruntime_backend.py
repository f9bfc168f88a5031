"""A Triton backend named `onnxruntime`, written in Python: runs a model folder's ONNX file with onnxruntime.

Triton runs this file as `<backend-directory>/onnxruntime/model.py` for every model whose config says
`platform: "onnxruntime_onnx"` when no C++ `libtriton_onnxruntime.so` is there ("Python-based backends",
https://github.com/triton-inference-server/python_backend#python-based-backends). It reads the parts of the
config that the C++ backend reads and that dat-deploy writes:

* `model_operations.op_library_filename`: custom-op libraries, registered on the session as the C++ backend
  does (RegisterCustomOpsLibrary). A path that does not exist here (the config names where the library lies
  inside a container, /models/...) falls back to the file of that name in the model's own folder.
* `parameters` `intra_op_thread_count` / `inter_op_thread_count`: the C++ backend's names for the session's
  thread pools (https://github.com/triton-inference-server/onnxruntime_backend#model-config-options).
* `default_model_filename` (default model.onnx) in the version folder Triton chose.

Triton's scheduler forms the dynamic batches; `execute` gets the batch's requests, runs them as one
onnxruntime call and splits the outputs back. Only the CPU execution provider is used.

Where dat_deploy is importable (under `dat-deploy serve`, whose configs also name its folder in the parameter
`dat_deploy_path`), a graph with `dat` ops gets the session setup dat-deploy's own OrtBackend makes: the op
library registered through its CPU-layer check and the CPU rewrites decided for this CPU at load time.
Elsewhere the file needs only onnxruntime and numpy.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def _op_libraries(config, model_folder):
    libraries = []
    for name in config.get("model_operations", {}).get("op_library_filename", []):
        local = os.path.join(model_folder, os.path.basename(name))
        if os.path.isfile(name):
            libraries.append(name)
        elif os.path.isfile(local):
            libraries.append(local)
        else:
            raise pb_utils.TritonModelException(
                f"custom-op library {name} not found (nor {local}); copy it into the model folder")
    return libraries


def _dat_deploy_session_model(config, path, options, libraries):
    """The graph as dat-deploy's OrtBackend would run it (bytes, or the path), with the libraries registered;
    None where dat_deploy is not importable."""
    extra = _parameter(config, "dat_deploy_path")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    try:
        import onnx
        from dat_deploy.runtime.onnxruntime_backend import prepare_session
    except ImportError:
        if extra:  # under dat-deploy serve: serve as dat-deploy runs it, or not at all
            raise
        return None
    return prepare_session(onnx.load(path), path, options, libraries)[0]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = args["model_repository"]
        path = os.path.join(folder, args["model_version"], config.get("default_model_filename") or "model.onnx")
        options = ort.SessionOptions()
        intra = int(_parameter(config, "intra_op_thread_count", 0))
        inter = int(_parameter(config, "inter_op_thread_count", 0))
        if intra > 0:
            options.intra_op_num_threads = intra
        if inter > 0:
            options.inter_op_num_threads = inter
        libraries = _op_libraries(config, folder)
        source = _dat_deploy_session_model(config, path, options, libraries)
        if source is None:
            for library in libraries:
                options.register_custom_ops_library(library)
            source = path
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.batched = config.get("max_batch_size", 0) > 0
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [(tensor["name"], pb_utils.triton_string_to_numpy(tensor["data_type"]))
                        for tensor in config["output"]]

    def _run(self, feeds):
        values = self.session.run([name for name, _ in self.outputs], feeds)
        return [np.ascontiguousarray(v, dtype=dtype) for v, (_, dtype) in zip(values, self.outputs)]

    def _respond(self, values):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for (name, _), value in zip(self.outputs, values)])

    def _answer_alone(self, feeds):
        try:
            return self._respond(self._run(feeds))
        except Exception as exc:  # noqa: BLE001 - the client gets the message, the server keeps serving
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {exc}"))

    def execute(self, requests):
        feeds = [{name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
                 for request in requests]
        if not self.batched or len(requests) == 1:
            return [self._answer_alone(f) for f in feeds]
        sizes = [len(f[self.inputs[0]]) for f in feeds]
        try:
            merged = self._run({name: np.concatenate([f[name] for f in feeds]) for name in self.inputs})
        except Exception:  # noqa: BLE001 - one bad request must not fail the others batched with it
            return [self._answer_alone(f) for f in feeds]
        bounds = np.cumsum(sizes)[:-1]
        split = [np.split(value, bounds) for value in merged]
        return [self._respond([parts[i] for parts in split]) for i in range(len(requests))]

    def finalize(self):
        self.session = None
