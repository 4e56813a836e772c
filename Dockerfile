# syntax=docker/dockerfile:1
# moeserve, GPU-server image (x86_64).
#
#   docker build -t moeserve:0.1.0 .
#   docker run --gpus all -p 50051:50051 -p 9400:9400 -v /path/to/checkpoint:/models:ro moeserve:0.1.0
#
# Why the stages look like this: scripts/setup.sh installs Debian bookworm package names, and
# NVIDIA's CUDA images are Ubuntu-based, where several of them are missing or far older
# (gRPC, abseil, prometheus-cpp, libclang-rt-14-dev). So the project is built and run on
# debian:bookworm exactly as CI builds it (setup.sh + build.sh, unmodified), and the CUDA
# images are used for what they are: the source of the toolkit (devel, for the build) and of
# the runtime libraries (runtime, for the final image). Both are self-contained binaries that
# run on bookworm's newer glibc. The driver itself is injected by the NVIDIA Container Toolkit.
ARG CUDA_VERSION=12.4.1
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS cuda-devel
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04 AS cuda-runtime

# ---- build: the same install path as CI --------------------------------------------------
FROM debian:bookworm AS build
ARG CUDA_DIR=cuda-12.4
# 80 A100, 86 A10/RTX 30, 89 L4/RTX 40, 90 H100/H200. CUDA_DIR follows CUDA_VERSION
# (12.4.x -> cuda-12.4).
ARG CUDA_ARCHITECTURES="80;86;89;90"
COPY --from=cuda-devel /usr/local/${CUDA_DIR} /usr/local/${CUDA_DIR}
RUN ln -s /usr/local/${CUDA_DIR} /usr/local/cuda
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
# setup.sh first, alone, so the package layer is cached across source changes.
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh
COPY . .
# Tests are CI's job, not the image's: skip building them. MOESERVE_CUDA=ON explicitly, so a
# toolkit that CMake cannot find fails the build instead of yielding a CPU-only image.
RUN bash scripts/build.sh -DMOESERVE_BUILD_TESTS=OFF -DMOESERVE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}"

# ---- runtime: shared libraries, two binaries, one config ---------------------------------
FROM debian:bookworm-slim AS runtime
ARG CUDA_DIR=cuda-12.4
# Runtime halves of the -dev packages setup.sh installs (their dependencies come along).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libsentencepiece0 libyaml-cpp0.7 \
      libprometheus-cpp-core1.0 libcpp-httplib0.11 \
 && rm -rf /var/lib/apt/lists/*
# The CUDA runtime and cuBLAS (with cuBLASLt) the CUDA backend links; the driver comes from the host.
COPY --from=cuda-runtime /usr/local/${CUDA_DIR}/targets/x86_64-linux/lib/libcudart.so.12* \
     /usr/local/${CUDA_DIR}/targets/x86_64-linux/lib/libcublas.so.12* \
     /usr/local/${CUDA_DIR}/targets/x86_64-linux/lib/libcublasLt.so.12* /usr/local/cuda/lib64/
RUN echo /usr/local/cuda/lib64 > /etc/ld.so.conf.d/cuda.conf && ldconfig
# What the NVIDIA Container Toolkit reads to expose the GPUs and mount the driver. With a GPU
# visible moeserve serves on it (model.backend: auto), without one on the CPU; it logs which.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The SentencePiece module is found next to the binary at ../lib/moeserve/.
COPY --from=build /src/build/server/moeserve /src/build/clients/moectl/moectl /usr/local/bin/
COPY --from=build /src/build/lib/moeserve/ /usr/local/lib/moeserve/
# The built-in default model (the trained demo DECO of tools/train), for a smoke run:
# --set model.path=/opt/moeserve/models/deco-demo
COPY --from=build /src/models/deco-demo/ /opt/moeserve/models/deco-demo/
COPY deploy/config/container.yaml /etc/moeserve/config.yaml
# Fail the image build, not the first start, on a missing library or a bad config.
RUN ! ldd /usr/local/bin/moeserve /usr/local/bin/moectl | grep 'not found' \
 && moeserve --config /etc/moeserve/config.yaml --check_config
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin moeserve \
 && mkdir -p /models
USER 10001:10001
VOLUME ["/models"]
# gRPC (inference, health, reflection), Prometheus metrics and the OpenAI-compatible HTTP API.
EXPOSE 50051 9400 8000
# Health is NOT_SERVING until the model is loaded and warm, and while draining.
HEALTHCHECK --interval=10s --timeout=8s --start-period=300s --retries=3 \
  CMD ["moectl", "health", "--target", "localhost:50051"]
# Extra arguments are moeserve flags: --set section.key=value,...
ENTRYPOINT ["moeserve", "--config", "/etc/moeserve/config.yaml"]
