"""`freezetune serve`: a trained model over HTTP (FastAPI + uvicorn, the optional extra `freezetune[serve]`).

- options.py: the command's flags and `ServeLimits` (no FastAPI needed, so `freezetune --help` works without it)
- backends.py: a trained or exported folder -> a predictor (PyTorch or ONNX Runtime), shared with `predict`
- batching.py: `DynamicBatcher`, which gathers concurrent requests into model calls on worker threads
- http.py: `create_app(predictor, info, limits)`, the FastAPI app: /predict, /health, /info, the page at /
- run.py: `serve_from_args`, which binds the socket, loads the model and runs uvicorn until SIGTERM/Ctrl-C
"""
