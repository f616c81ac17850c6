"""Decoder complexity (MACs per decoded pixel, parameters, model bytes) from a bundle's ONNX model files."""
