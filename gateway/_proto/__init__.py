"""Generated Open Inference Protocol messages (see scripts/gen_protos.py)."""

from gateway._proto import grpc_predict_v2_pb2 as pb

SERVICE_NAME = "inference.GRPCInferenceService"

__all__ = ["SERVICE_NAME", "pb"]
