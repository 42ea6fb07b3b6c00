"""Export a trained run for other runtimes (ONNX), with quantised variants checked against fp32."""
