# One image for every archq service, built for linux/amd64 and linux/arm64 alike:
#   docker buildx build --platform linux/amd64,linux/arm64 -t archq .
# Nothing here names an architecture: Debian's packages and PyPI's wheels resolve per platform.
FROM python:3.11-slim-bookworm
# Set by buildx per platform; recorded so `docker inspect` tells which build an image is.
ARG TARGETARCH
LABEL org.opencontainers.image.title="archq" io.archq.arch="${TARGETARCH}"

# libvirt-dev + pkg-config + gcc build libvirt-python; the QEMU and libvirt daemons (and AAVMF, UEFI for
# arm64 disk images) are for the worker service when it runs libvirtd inside the container (see compose.yaml).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvirt-dev libvirt-clients libvirt-daemon-system pkg-config gcc \
      qemu-system-x86 qemu-system-arm qemu-utils qemu-efi-aarch64 busybox-static ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY queues ./queues
COPY web ./web
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir .

ENV ARCHQ_DATA_DIR=/var/lib/archq
VOLUME ["/var/lib/archq"]
EXPOSE 8080 5555
ENTRYPOINT ["archq"]
CMD ["--help"]
