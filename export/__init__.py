"""Export a trained run to a validated two-graph ONNX bundle (needs torch and onnx)."""
