# stomprelay: one relay per container (see docker-compose.yml for a two-relay cluster).

# The web page's only third-party code, @stomp/stompjs, comes from npm at build time.
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080
# The package carries the pages and the stomp.js bundle (setup.py): they are built into it
# here, and the relay serves them from any folder.
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY stomprelay ./stomprelay
COPY web ./web
COPY --from=web /web/node_modules/@stomp ./web/node_modules/@stomp
RUN pip install . \
    && rm -rf /src \
    && useradd --system --no-create-home --home-dir /app stomprelay
WORKDIR /app
USER stomprelay
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/health', timeout=2)"]
CMD ["stomprelay", "serve"]
