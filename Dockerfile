# minisgl in a container: build both native libraries in the CUDA 13 devel image, run in the runtime image.
#   docker build -t minisgl .
#   docker run --gpus all -p 1919:1919 -v hf-cache:/root/.cache/huggingface minisgl                       # embedded model
#   docker run --gpus all -p 1919:1919 -v hf-cache:/root/.cache/huggingface minisgl --model Qwen/Qwen3-0.6B
# Untested: the machines this project is developed on have no Docker engine (see README.md).
ARG CUDA_VERSION=13.0.0
ARG BUN_VERSION=1.4.5

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build
ARG BUN_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates g++ nodejs npm \
    && rm -rf /var/lib/apt/lists/* && npm install -g "bun@${BUN_VERSION}" \
    && install -m 755 "$(readlink -f "$(command -v bun)")" /opt/bun
WORKDIR /app
COPY . .
# `bun install` runs scripts/build.ts: build/libmsgl_cpu.so (g++) and build/libmsgl_cuda.so (nvcc).
# A portable -march instead of "native": the image runs on other machines than the one that built it.
ENV MINISGL_CPU_ARCH=x86-64-v3
RUN bun install --frozen-lockfile && test -f build/libmsgl_cuda.so && test -f build/libmsgl_cpu.so

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/bun /usr/local/bin/bun
COPY --from=build /app /app
WORKDIR /app
ENV HF_HOME=/root/.cache/huggingface
VOLUME /root/.cache/huggingface
EXPOSE 1919
ENTRYPOINT ["bun", "run", "serve", "--host", "0.0.0.0"]
