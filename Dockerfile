# The gateway's image: `gateway serve` with KServe's flags, as a container.
#
#   docker build -t inference-hop-gateway .
#   docker run --rm -p 8080:8080 -p 8081:8081 inference-hop-gateway serve \
#       --model_name iris --predictor_host predictor:8081 --predictor_protocol grpc-v2
#
# As a KServe transformer container, give `args` that start with `serve`; KServe appends
# --model_name, --predictor_host and --http_port (deploy/kserve has an InferenceService).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package is built from, so that editing an example does not reinstall it.
WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# uvloop is the gateway's event loop whenever it is installed (--event-loop auto).
RUN pip install . uvloop && rm -rf /tmp/src

# A relative --transformer path (examples/transformer/transformer.py:IrisTransformer) or
# --graph path (examples/graph/graph.yaml) resolves here as it does from the root of a
# checkout. Your own transformer or graph goes in an image FROM this one: COPY
# my_transformer.py . and --transformer my_transformer.py:Class
WORKDIR /app
COPY examples/transformer ./examples/transformer
COPY examples/graph ./examples/graph

# A numeric uid, so that Kubernetes can check runAsNonRoot without a passwd lookup.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway
USER 10001

# REST (v1, v2, /metrics, health) and gRPC v2: --http_port and --grpc_port.
EXPOSE 8080 8081
ENTRYPOINT ["gateway"]
CMD ["serve"]
