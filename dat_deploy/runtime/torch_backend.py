"""PyTorch eager as a backend: the fp32 reference of every parity check."""

from __future__ import annotations

import numpy as np
import torch

from dat_deploy.runtime.names import output_names_for


class TorchBackend:
    thread_safe = False  # PyTorch does not promise that one module may run in several threads at once
    def __init__(self, model: torch.nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 output_names: list[str] | None = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        precision = {torch.float32: "", torch.float16: "-fp16", torch.bfloat16: "-bf16"}[dtype]
        self.name = f"torch-{self.device.type}{precision}"
        self.output_names = output_names or output_names_for(model)

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
        out = self.model(x)
        tensors = list(out) if isinstance(out, (list, tuple)) else [out]
        return {name: t.float().cpu().numpy() for name, t in zip(self.output_names, tensors)}
