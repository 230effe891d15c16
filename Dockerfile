# sidecar — mutual-TLS reverse proxy for legacy managed-file-transfer servers.
#
# Build:  docker build -t sidecar .
# Run:    docker run --read-only -v /srv/sidecar:/etc/sidecar:ro -p 1762:1762 sidecar
#
# The configuration and the PKI are expected read-only at /etc/sidecar (config.yaml, and the
# certificate files it names, relative paths being relative to /etc/sidecar).
# TLS is done by the OpenSSL that ships inside the `cryptography` wheel, not by the base image's
# libssl: TLS security fixes arrive by rebuilding this image with a newer `cryptography`.

# ---- build stage: wheels for sidecar and its runtime dependencies only (no test extra) ---------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE config.example.yaml Dockerfile ./
COPY sidecar ./sidecar
# Shipped with the package under <prefix>/share/doc/sidecar (pyproject.toml, data-files).
COPY docs ./docs
COPY deploy ./deploy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime stage ------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid sidecar --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sidecar
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/sidecar-*.whl \
 && rm -rf /wheels

USER 10001:10001
WORKDIR /etc/sidecar
# 1762: the example listener (CFT SAP); 9901: the admin endpoint (health, readiness, metrics).
EXPOSE 1762 9901

# Needs the admin endpoint on port 9901 through loopback (admin.listen 127.0.0.1:9901 or 0.0.0.0:9901),
# with /healthz open: no admin.token_file, or admin.health_without_token: true.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=3)"]

# Logs: one JSON object per line on stderr. SIGTERM drains (limits.drain_timeout), SIGHUP reloads.
CMD ["sidecar", "run", "-c", "/etc/sidecar/config.yaml"]
