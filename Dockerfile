# syntax=docker/dockerfile:1
#
# DeepStream 8.0 + YOLO11 with a TensorRT engine built for the GPU it runs on, at the first start.
#
#   docker build -t yolo-deepstream .
#   docker run --gpus all -v engines:/app/engines --stop-timeout 60 yolo-deepstream [APP_OPTION...]
#
# Base: the Triton image, not 8.0-samples-multiarch. It has what the first start and this build
# need: TensorRT with its Python bindings and /usr/bin/trtexec, the CUDA toolkit (nvcc, headers)
# and the DeepStream headers for nvdsinfer_yolo/, pyservicemaker, and build tools. The samples
# image is a runtime image without the development headers (its users install libnvinfer-bin
# for trtexec). "multiarch": the same tag serves x86_64 dGPUs and Jetson/ARM.
FROM nvcr.io/nvidia/deepstream:8.0-triton-multiarch

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# tini: PID 1 that reaps zombies and forwards signals (docker-library advice: from the distro).
# build-essential/python3-dev: pycuda is an sdist and nvdsinfer_yolo/ is C++.
# python3-venv: Ubuntu 24.04's pip is "externally managed", so the Python deps go into a venv.
# libgl1: cv2 (opencv-python, pulled in by ultralytics) links against libGL.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends \
		build-essential \
		libgl1 \
		python3-dev \
		python3-venv \
		tini \
	&& rm -rf /var/lib/apt/lists/*

# The venv sees the image's site-packages (tensorrt, pyservicemaker, pyds) and adds pinned
# deps on top; its python3 comes first on PATH for the entrypoint, the app and `docker exec`.
# These pins were not installed while writing this file (no Docker engine on that machine).
# LIBRARY_PATH: pycuda links -lcuda; at build time there is no driver, only CUDA's stub.
ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-image.txt /tmp/requirements-image.txt
RUN python3 -m venv --system-site-packages "$VIRTUAL_ENV" \
	&& CUDA_ROOT=/usr/local/cuda LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
		pip install --no-cache-dir -r /tmp/requirements-image.txt \
	&& rm /tmp/requirements-image.txt \
	&& python3 -c "import importlib.util as u, torch, onnx, ultralytics; assert u.find_spec('tensorrt') and u.find_spec('pyservicemaker'), 'tensorrt/pyservicemaker not visible in the venv'; print('torch', torch.__version__)"

# The bbox parser library for nvinfer; its Makefile finds CUDA_VER itself.
COPY nvdsinfer_yolo/ /app/nvdsinfer_yolo/
RUN make -C /app/nvdsinfer_yolo

# The project, file by file (changes most often, so last).
COPY --chmod=0755 entrypoint.sh /app/entrypoint.sh
COPY setup_deepstream_env.sh auto_build_engine.py main_low_latency.py /app/
COPY configs/ /app/configs/
# Bytecode for `python3 -m auto_build_engine` (entrypoint, healthcheck): the warm start then
# skips compiling the script; the non-root user could not write /app/__pycache__ itself.
RUN python3 -m compileall -q /app/auto_build_engine.py /app/main_low_latency.py

# Non-root user "ds" (uid/gid 1000 by default). Nothing in DeepStream needs root at run time:
# the nvidia runtime hands the GPU, NVDEC/NVENC device nodes to any user. The user owns only
# what it writes: /app/engines (the volume: engines, sidecars, lock, weights, ONNX) and
# /app/configs (the generated nvinfer config); the code stays root-owned and read-only.
# A named volume copies this ownership on first use; a bind mount must be chown'ed to the uid
# (or run with --user root). If the base image already has an account with this uid (Ubuntu
# 24.04 ships "ubuntu" with 1000), that account is used, as USER names the uid.
ARG DS_UID=1000
ARG DS_GID=1000
RUN if ! getent group "$DS_GID" > /dev/null; then groupadd --gid "$DS_GID" ds; fi \
	&& if ! getent passwd "$DS_UID" > /dev/null; then \
		useradd --no-log-init --create-home --uid "$DS_UID" --gid "$DS_GID" --shell /bin/bash ds; \
	fi \
	&& mkdir -p /app/engines/tensorrt /app/engines/models /app/configs /app/output \
	&& chown -R "$DS_UID:$DS_GID" /app/engines /app/configs /app/output

# compute: CUDA/TensorRT; utility: nvidia-smi and NVML (the builder's GPU report);
# video: NVDEC/NVENC for nvv4l2decoder/nvv4l2h264enc. Set explicitly, not left to the runtime.
# CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA numbers GPUs like nvidia-smi/NVML, so GPU_ID means the same
# GPU to the builder and to nvinfer's gpu-id.
# The builder's own variables (MODEL, IMGSZ, ..., ENGINE_DIR) are not set here: their defaults
# live in auto_build_engine.py alone (`python3 /app/auto_build_engine.py --help`).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
	CUDA_DEVICE_ORDER=PCI_BUS_ID \
	APP_DIR=/app \
	PYTHONUNBUFFERED=1

# Engines are per GPU and per TensorRT version: keep them on a volume, not in a layer.
VOLUME /app/engines
WORKDIR /app
USER ${DS_UID}:${DS_GID}

# Healthy = a valid engine and nvinfer config exist for this GPU and these options (exit 0 of
# --check, which reads a small sidecar and stats the engine). The first start builds the engine
# (minutes on small GPUs), so the start period covers a slow first build. This checks readiness
# of the engine, not liveness of the pipeline. A container started with SKIP_ENGINE_BUILD=1 and
# no engine stays unhealthy.
HEALTHCHECK --start-period=30m --interval=60s --timeout=30s --retries=3 \
	CMD ["/opt/venv/bin/python3", "-m", "auto_build_engine", "--check"]

# SIGTERM (also Docker's default, stated here on purpose): the app turns SIGTERM into Pipeline.stop() so
# the pipeline flushes and closes its outputs; during a first build the entrypoint passes it on
# to the builder, which leaves the previous engine untouched. Flushing takes longer than Docker's
# 10 s default, so stop with e.g. `docker stop -t 60` / `docker run --stop-timeout 60`
# (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# tini as PID 1 (no `docker run --init` / compose `init: true` needed): it reaps zombies and
# passes SIGTERM to its child, the entrypoint, which passes it on to the builder (a child it
# waits for) or, after exec, is the app itself. No -g: the builder must get one SIGTERM, not two.
ENTRYPOINT ["/usr/bin/tini", "--", "/app/entrypoint.sh"]
CMD []
