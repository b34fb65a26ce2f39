"""Export stage: fused ONNX (fp32, fp16, int8 QDQ), TensorRT engines, and an accuracy-drift gate."""
