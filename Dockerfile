# syntax=docker/dockerfile:1
#
# meshcap init-container image: a static meshcap binary plus the iptables (legacy and nft
# variants) and nftables user-space tools it drives. The entrypoint is meshcap, so the argument
# list Istio's sidecar injector writes for istio-init (`args: [istio-iptables, -p, "15001", ...]`)
# works unchanged.
#
#   docker build -t meshcap .                       # runtime image (default, last stage)
#   docker build --target static -t meshcap:static .  # only the binary (render / CI diffs)
#
# Expected size (estimated, no container engine was available where this was written): Alpine
# base ~8 MiB + iptables/ip6tables/iptables-legacy/nftables with their libraries ~5 MiB + meshcap
# ~2.5 MiB = ~15 MiB unpacked, ~7 MiB compressed. The `static` target is the binary alone (~2.5 MiB).
#
# Nothing is downloaded with curl/wget: crates come from the registry through cargo, the tools
# from Alpine's package repository through apk.

ARG RUST_IMAGE=rust:1-bookworm
ARG ALPINE_IMAGE=alpine:3.22

# ---- build: the static binary (glibc, +crt-static, static-pie; see scripts/build-static.sh) ----
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin="$(scripts/build-static.sh)" \
    && install -D -m 0755 "$bin" /out/meshcap \
    && /out/meshcap --version

# ---- static: the binary alone, for `render`/`check` in CI; cannot apply rules ----
FROM scratch AS static
COPY --from=build /out/meshcap /meshcap
ENTRYPOINT ["/meshcap"]

# ---- runtime: the init-container image ----
FROM ${ALPINE_IMAGE} AS runtime
# VERSION must equal Cargo.toml's version (a test checks it); REVISION: pass the git commit.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="meshcap" \
      org.opencontainers.image.description="Drop-in replacement for Istio's istio-iptables: sets up the sidecar traffic capture (iptables or nftables) in a pod's network namespace." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# iptables: the nft variant (iptables, iptables-nft, -save, -restore); iptables-legacy: the
# legacy variant; ip6tables: the IPv6 commands; nftables: nft for --native-nftables.
# The loop fails the build if a package split ever moves one of the programs meshcap runs.
RUN apk add --no-cache iptables ip6tables iptables-legacy nftables \
    && for p in iptables-legacy iptables-legacy-save iptables-legacy-restore \
                ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore \
                iptables-nft iptables-nft-save iptables-nft-restore \
                ip6tables-nft ip6tables-nft-save ip6tables-nft-restore \
                iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
                nft; do \
         command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 1; }; \
       done
COPY --from=build /out/meshcap /usr/local/bin/meshcap
# Alpine has no glibc: this only runs if the binary is really static.
RUN meshcap --version
# Runs as root with only NET_ADMIN and NET_RAW (see deploy/pod.yaml); needs no other capability.
# iptables-legacy takes its lock in /run/xtables.lock: keep /run writable (an emptyDir works).
USER 0:0
ENTRYPOINT ["meshcap"]
