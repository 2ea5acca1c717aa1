# The sidecar image. One file for both worlds:
#   online:  docker build .                      (BASE_IMAGE defaults to a public Python slim)
#   offline: docker build --build-arg BASE_IMAGE=sidecar-base:bookworm .   with wheels in
#            wheelhouse/ (scripts/setup builds both): pip installs from them with --no-index.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md /src/
COPY sidecar/ /src/sidecar/
RUN python3 -m venv /opt/sidecar \
 && if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
      /opt/sidecar/bin/pip install --no-index --find-links /wheelhouse sidecar; \
    else \
      /opt/sidecar/bin/pip install /src; \
    fi \
 && find /opt/sidecar -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/sidecar/bin/python -m compileall -q /opt/sidecar/lib \
 && /opt/sidecar/bin/python -m sidecar.codecache build
# ^ the code cache: every module the commands import, compiled, in one file the program maps
#   at start (no file system call per import). Rerun it after patching installed files.

FROM ${BASE_IMAGE}
ARG UID=10001
ARG GID=10001
# Same uid/gid as the demo app: both write the database files on the shared volume.
RUN groupadd --system --gid "${GID}" sidecar \
 && useradd --system --uid "${UID}" --gid sidecar --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sidecar \
 && mkdir -p /app/data /backups \
 && chown sidecar:sidecar /app/data /backups \
 && chmod 0750 /backups
COPY --from=build /opt/sidecar /opt/sidecar
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIDECAR_BACKUP_DIR=/backups
USER sidecar:sidecar
WORKDIR /app/data
# Healthy while the last verified backup is younger than SIDECAR_MAX_BACKUP_AGE (long-running
# mode). Cheap: reads the backup manifests only, never locks the database.
HEALTHCHECK --interval=60s --timeout=10s --start-period=10m --retries=2 \
  CMD ["sidecar", "health", "--backups-only"]
ENTRYPOINT ["sidecar"]
CMD ["deploy"]
