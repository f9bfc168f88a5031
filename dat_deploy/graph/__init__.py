"""ONNX graph tools that need no PyTorch: what makes a graph a dat graph and an index over a graph's
tensors (dat_graph), and the graph rewrites (fp16 with fp32 islands; onnxruntime's CPU fusions)."""
