"""Triton python-backend model: encoded images in, top-k labels and probabilities out.

Each request carries encoded images (BYTES, one per batch row). They are decoded and preprocessed here, on the
server, with dat-deploy's own evaluation transform (`dat_deploy.preprocess`, the one `Classifier` uses), then
sent as one batch to the tensor model through a BLS call, so Triton's scheduler batches them together with
tensor requests from other clients. An image that cannot be decoded fails its own request only.

The config's `parameters` say which tensor model to call and how it was exported (written by dat-deploy serve).
"""

import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameters(config):
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = _parameters(config)
        if p.get("dat_deploy_path") and p["dat_deploy_path"] not in sys.path:
            sys.path.insert(0, p["dat_deploy_path"])  # the same dat_deploy as the process that wrote the config
        from dat_deploy.api import softmax
        from dat_deploy.labels import class_names
        from dat_deploy.preprocess import preprocess

        self.softmax = softmax
        self.preprocess = preprocess
        self.tensor_model = p["tensor_model"]
        self.tensor_input = p["tensor_input"]
        self.tensor_output = p["tensor_output"]
        self.tensor_max_batch = max(1, int(p["tensor_max_batch"]))
        self.transform = (int(p["input_size"]), int(p["resize_size"]), json.loads(p["mean"]), json.loads(p["std"]))
        self.labels = np.array([name.encode() for name in class_names(int(p["num_classes"]))], dtype=np.object_)
        self.topk = min(int(p["topk"]), len(self.labels))

    def _logits(self, batch):
        """The tensor model on `batch`, in chunks its max_batch_size accepts."""
        parts = []
        for start in range(0, len(batch), self.tensor_max_batch):
            request = pb_utils.InferenceRequest(
                model_name=self.tensor_model, requested_output_names=[self.tensor_output],
                inputs=[pb_utils.Tensor(self.tensor_input, batch[start:start + self.tensor_max_batch])])
            response = request.exec()
            if response.has_error():
                raise RuntimeError(f"{self.tensor_model}: {response.error().message()}")
            parts.append(pb_utils.get_output_tensor_by_name(response, self.tensor_output).as_numpy())
        return np.concatenate(parts)

    def _answer(self, probabilities):
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :self.topk]  # as Classifier.predict ranks
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("labels", self.labels[order]),
            pb_utils.Tensor("probabilities", np.take_along_axis(probabilities, order, axis=1).astype(np.float32)),
            pb_utils.Tensor("indices", order.astype(np.int32)),
        ])

    def execute(self, requests):
        responses = [None] * len(requests)
        batches, owners = [], []
        for i, request in enumerate(requests):
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            try:
                batches.append(self.preprocess([bytes(image) for image in images], *self.transform))
                owners.append(i)
            except Exception as exc:  # noqa: BLE001 - UserError for undecodable images: the client gets the line
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        if owners:
            try:
                probabilities = self.softmax(self._logits(np.concatenate(batches)))
            except Exception as exc:  # noqa: BLE001
                for i in owners:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                return responses
            bounds = np.cumsum([len(b) for b in batches])[:-1]
            for i, rows in zip(owners, np.split(probabilities, bounds)):
                responses[i] = self._answer(rows)
        return responses
