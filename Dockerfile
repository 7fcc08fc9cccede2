# syntax=docker/dockerfile:1
# Build stage: the Rust toolchain compiles a release binary (libgit2 is vendored).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin stackd

# Run stage: distroless with glibc and CA certificates, as a non-root user.
# No HEALTHCHECK: Kubernetes liveness and readiness probes hit /healthz and /readyz.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stackd /usr/local/bin/stackd
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stackd"]
CMD ["--help"]
