"""Pure-Python runtime: one runner contract over TensorRT (pycuda), ONNX Runtime and PyTorch."""
