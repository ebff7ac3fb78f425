# imgclf's web service in a container: `imgclf serve` on port 8000, CPU only.
#
#   imgclf demo --out demo && cp demo/model.safetensors .      # or your own model: imgclf export MODEL model.safetensors
#   docker build -t imgclf-serve .                              # or: --build-arg MODEL=path/to/other.safetensors
#   docker run --rm -p 8000:8000 imgclf-serve                   # then open http://localhost:8000
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=2 MPLCONFIGDIR=/tmp/matplotlib IMGCLF_HOME=/tmp/imgclf

# The CPU build of torch and its matching torchvision first, from PyTorch's CPU index: PyPI's default torch is a
# CUDA build of several GB. 2.14.1 / 0.29.1 is the pair imgclf is tested with.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1

# imgclf without the course's requirements (fastai, Jupyter, scikit-learn and the rest), then only what
# `imgclf serve` imports: settings.ini's serve_requirements.
WORKDIR /app
COPY . /tmp/src
RUN pip install --no-deps /tmp/src \
 && pip install $(python -c "import configparser; c = configparser.ConfigParser(delimiters=['=']); \
                             c.read('/tmp/src/settings.ini'); print(c['DEFAULT']['serve_requirements'])") \
 && rm -rf /tmp/src

ARG MODEL=model.safetensors
COPY ${MODEL} /app/model.safetensors

RUN useradd --create-home --uid 10001 imgclf
USER imgclf

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
CMD ["imgclf", "serve", "--model", "/app/model.safetensors", "--host", "0.0.0.0", "--port", "8000"]
