"""Parity: compare backends against the PyTorch fp32 reference, Polygraphy-style."""
