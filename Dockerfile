# The pullrun server as an image. It drives the engine whose socket is mounted
# (see docker-compose.yml); it runs no containers inside itself.
#
# It runs as the unprivileged user `pullrun` (uid and gid 10001), never as
# root. To reach the engine it needs the group that owns the engine's socket,
# whose id differs from host to host, so it is given at run time:
#   compose:     DOCKER_GID=$(stat -c %g /var/run/docker.sock) docker compose up --build
#   docker run:  --group-add "$(stat -c %g /var/run/docker.sock)"
# That group is root on the host in all but name (whoever drives the engine
# can mount / into a container): so is access to pullrun. See the README.
FROM python:3.12-slim
RUN groupadd --system --gid 10001 pullrun \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/pullrun \
      --shell /usr/sbin/nologin pullrun \
 && mkdir -p /data && chown 10001:10001 /data && chmod 0700 /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend backend
COPY templates templates
COPY static static
# Editable: the package finds templates/ and static/ beside backend/ in /app
# (a plain install would put backend/ alone into site-packages).
RUN pip install --no-cache-dir -e .
# 0.0.0.0 inside the container (the port is published on the host's loopback
# only, see docker-compose.yml); sign-in stays required: PULLRUN_AUTH=off is
# refused on any address but loopback.
ENV PULLRUN_DATA_DIR=/data PULLRUN_HOST=0.0.0.0 PULLRUN_PORT=8000
# A new named volume takes the owner and mode of /data above (10001, 0700).
VOLUME /data
EXPOSE 8000
USER 10001:10001
CMD ["pullrun", "serve"]
