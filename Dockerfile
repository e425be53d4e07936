# syntax=docker/dockerfile:1.7
# The operator image. Build from the repository root:
#   docker build -t ghcr.io/tracking-operator/tracking-operator:0.1.0 .
# Both binaries come from one workspace build (`cargo build --release`); this image copies one.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tracking-operator \
 && install -D -m 0755 target/release/tracking-operator /out/tracking-operator

# distroless/cc: glibc + libgcc and CA certificates, no shell, no package manager; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tracking-operator /usr/local/bin/tracking-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tracking-operator"]
CMD ["run"]
