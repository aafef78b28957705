# syntax=docker/dockerfile:1
#
# meshcap's container images (docs/image.md):
#
#   runtime (default, last stage)  the init-container image: meshcap plus the iptables programs
#                                  it runs (legacy and nft variants, IPv4 and IPv6), their
#                                  shared libraries and the xtables extensions the rules load —
#                                  nothing else (no shell, no package manager). ENTRYPOINT meshcap,
#                                  so the argument list Istio's injector writes for istio-init
#                                  (`args: [istio-iptables, -p, "15001", ...]`) works unchanged.
#   static                         FROM scratch: the static meshcap binary alone (render, check,
#                                  trace; --native-nftables applies, checks and cleans up: nf_tables
#                                  over netlink, no nft program).
#
# Two ways to build, same stages:
#
# 1. With a registry (docker, or podman/buildah):
#        docker build -t meshcap .
#        docker build --target static -t meshcap:static .
#    The binary is compiled in RUST_IMAGE (scripts/build-static.sh) and the iptables programs are
#    installed with apt-get in DEBIAN_IMAGE; for another architecture add --platform (the two
#    target-architecture stages then run under emulation).
#
# 2. Offline (what scripts/image.sh does; no registry, no emulation): the binary is built on the
#    host by scripts/build-static.sh, the Debian packages are unpacked by mmdebstrap, and both
#    come in as named build contexts; DEBIAN_IMAGE is a Debian image made locally by mmdebstrap:
#        podman build --platform linux/arm64 \
#          --build-arg BINARY=prebuilt --build-context meshcap-bin=DIR_WITH_<arch>/meshcap \
#          --build-arg PACKAGES=unpacked --build-context debian-packages=UNPACKED_TREE \
#          --build-arg DEBIAN_IMAGE=localhost/meshcap-base:bookworm .
#    Nothing runs in a target-architecture container, so one host builds every architecture.
#    (buildah before 1.29 does not predefine BUILDPLATFORM: scripts/image.sh passes
#    --build-arg BUILDPLATFORM=linux/<the host's architecture>.)
#
# Nothing is downloaded with curl or wget: crates come through cargo, packages through apt.

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
# Where the binary comes from: `build` (compiled in RUST_IMAGE) or `prebuilt` (the build context
# `meshcap-bin`, holding <TARGETARCH>/meshcap).
ARG BINARY=build
# Where the Debian packages come from: `apt` (installed in DEBIAN_IMAGE) or `unpacked` (the build
# context `debian-packages`, a tree of unpacked packages for TARGETARCH).
ARG PACKAGES=apt

# ---- the static binary (glibc, +crt-static, static-pie; see scripts/build-static.sh) ----
FROM ${RUST_IMAGE} AS binary-build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin="$(scripts/build-static.sh)" \
    && install -D -m 0755 "$bin" /out/meshcap \
    && /out/meshcap --version

FROM scratch AS binary-prebuilt
ARG TARGETARCH
COPY --from=meshcap-bin ${TARGETARCH}/meshcap /out/meshcap

FROM binary-${BINARY} AS binary

# ---- Debian's iptables packages for the target architecture ----
FROM ${DEBIAN_IMAGE} AS packages-apt
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*

FROM scratch AS packages-unpacked
COPY --from=debian-packages / /

FROM packages-${PACKAGES} AS packages

# ---- the init container's root file system, picked out of the packages ----
# Runs on the build machine's architecture: it only copies files (scripts/image/rootfs.sh lists
# them), so the arm64 image is assembled without emulation.
FROM --platform=${BUILDPLATFORM} ${DEBIAN_IMAGE} AS userland
ARG TARGETARCH
COPY scripts/image/rootfs.sh /usr/local/bin/meshcap-rootfs
RUN --mount=type=bind,from=packages,target=/packages \
    meshcap-rootfs "${TARGETARCH}" /packages /rootfs

# ---- static: the binary alone ----
FROM scratch AS static
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="meshcap (static)" \
      org.opencontainers.image.description="meshcap alone: render, check and trace Istio's sidecar traffic capture." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/meshcap /meshcap
ENTRYPOINT ["/meshcap"]

# ---- runtime: the init-container image ----
FROM scratch AS runtime
# VERSION must equal Cargo.toml's version, REVISION is the git commit and SOURCE the repository's
# URL (scripts/image.sh passes all three and its test compares the labels).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="meshcap" \
      org.opencontainers.image.description="Drop-in replacement for Istio's istio-iptables: sets up the sidecar traffic capture (iptables or nftables) in a pod's network namespace." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=userland /rootfs/ /
COPY --from=binary /out/meshcap /usr/local/bin/meshcap
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Runs as root with only NET_ADMIN and NET_RAW (see deploy/pod.yaml); needs no other capability.
# iptables-legacy takes its lock in /run/xtables.lock: keep /run writable (an emptyDir works).
USER 0:0
ENTRYPOINT ["meshcap"]
