# treaty-bot in a container: slim, non-root, state on a volume, with a health check.
#   docker build -t treaty-bot .
#   docker run -d --name treaty-bot -v treaty-data:/data -v "$PWD/config:/app/config:ro" \
#     -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN treaty-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install . && useradd --system --uid 10001 --home /data treaty \
    && mkdir -p /data && chown treaty /data
COPY config ./config

USER treaty
VOLUME ["/data"]
# The state file lives on the volume; config/ can be replaced by a mounted directory.
ENV TREATY_BOT_CONFIG=/app/config
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=60s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
CMD ["treaty-bot", "run"]
