"""Deployment runtimes: ONNX export + onnxruntime, CUDA graphs (see the export issue)."""
