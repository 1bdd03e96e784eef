"""Deployment runtimes.

`onnx_export` writes encoder/decoder/router ONNX graphs (+ a model.json sidecar), `onnx_runtime`
runs them through onnxruntime behind the Tokenizer's encode_step/decode_step interface, `verify`
checks parity with the torch model. Kept import-free here so `import livetok.export` never needs
onnx or onnxruntime.
"""
