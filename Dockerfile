# The probity image: one static binary (`probity operator`, `probity lint`,
# ...) on a distroless base, running as a non-root user.
#
#   docker build \
#     --build-arg RUST_IMAGE=docker.io/library/rust:1.89-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:<digest> \
#     -t ghcr.io/probity-dev/probity:dev .
#
# The base images are referenced by digest. The digests below are
# PLACEHOLDERS (all zeros) and the build fails on them until you pass the
# real ones: resolve them with `docker buildx imagetools inspect <image>` or
# `crane digest <image>`, from a registry you trust, and record them here or
# in your build pipeline. A tag alone is never enough: it can move.

ARG RUST_IMAGE=docker.io/library/rust:1.89-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:0000000000000000000000000000000000000000000000000000000000000000

FROM ${RUST_IMAGE} AS build
# musl: a fully static binary, so the runtime image needs no libc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin probity \
    && install -D -m 0555 target/x86_64-unknown-linux-musl/release/probity /out/probity

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/probity /usr/local/bin/probity
# distroless "nonroot": uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/probity"]
CMD ["operator"]
