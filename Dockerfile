# The pullrun server as an image. It drives the engine whose socket is mounted
# (see docker-compose.yml); it runs no containers inside itself.
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend backend
COPY templates templates
COPY static static
RUN pip install --no-cache-dir .
ENV PULLRUN_DATA_DIR=/data PULLRUN_HOST=127.0.0.1 PULLRUN_PORT=8000
VOLUME /data
CMD ["pullrun", "serve"]
