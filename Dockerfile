# One image for every archq service, built for linux/amd64 and linux/arm64 alike:
#   docker buildx build --platform linux/amd64,linux/arm64 -t archq .
# Nothing here names an architecture: Debian's packages and PyPI's wheels resolve per platform.

# Stage 1: wheels. libvirt-python compiles against libvirt (libvirt-dev, pkg-config, gcc); npm installs xterm.js
# for the web UI's console (package data of web.ui). The compiler and npm stay here.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# Every package pyproject installs (tests/packaging/test_dependencies.py checks this list against it).
COPY queues ./queues
COPY web ./web
COPY workers ./workers
COPY migrations ./migrations
COPY client ./client
RUN npm ci --prefix web/ui/xterm --no-audit --no-fund
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[all]'

# Stage 2: the runtime, without a compiler. The QEMU and libvirt daemons (and AAVMF, UEFI for arm64 disk
# images) are for the worker service when it runs libvirtd inside the container (see compose.yaml).
FROM python:3.11-slim-bookworm
# Set by buildx per platform; recorded so `docker inspect` tells which build an image is.
ARG TARGETARCH
LABEL org.opencontainers.image.title="archq" io.archq.arch="${TARGETARCH}"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvirt0 libvirt-clients libvirt-daemon-system \
      qemu-system-x86 qemu-system-arm qemu-utils qemu-efi-aarch64 busybox-static ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'archq[all]' && rm -rf /wheels

# The API, conductor and Flower run as an unprivileged user; the worker service runs as root (compose.yaml)
# because it drives the host's libvirtd socket.
RUN useradd --system --uid 10001 --home-dir /var/lib/archq archq \
 && install -d -m 0700 -o archq -g archq /var/lib/archq
USER archq
ENV ARCHQ_DATA_DIR=/var/lib/archq
VOLUME ["/var/lib/archq"]
EXPOSE 8080 5555
ENTRYPOINT ["archq"]
CMD ["--help"]
