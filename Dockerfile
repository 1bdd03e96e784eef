# The livetok image for docker-compose.yml: CPU PyTorch by default; the gpu service builds it with
# TORCH_INDEX_URL=https://pypi.org/simple, whose Linux torch wheels are the CUDA builds.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch first, in its own layer: the largest download and the one that changes least
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX_URL}
# only what the package needs: the build context also holds runs/, data/, out/
COPY pyproject.toml README.md ./
COPY engine engine
COPY stream stream
COPY export export
RUN pip install .

# no ENTRYPOINT: the compose services give the whole `livetok ...` command line
CMD ["livetok", "--help"]
