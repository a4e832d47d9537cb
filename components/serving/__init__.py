"""Serving: the model servers (`model_server` with its engines `vllm_service` and `tgi_service`), the S3 model
registry (`model_registry`) and KEDA with one scaler per model (`keda_scaler`). Reads compute (GPU pools, system
nodes) and, for the scalers' queries only, observability.signals; never edge."""
