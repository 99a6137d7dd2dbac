# syntax=docker/dockerfile:1
# kubestash operator image: one static binary on distroless/static, non-root.
#
#   docker build -t <registry>/kubestash:0.1.0 .
#
# The builder stage runs scripts/build-static.sh, the same script CI runs
# (glibc static, +crt-static, checked static and under the size budget), so
# the final stage is only a copy. Image size: ~2 MB base + the binary (< 28 MB
# enforced by the script), under 30 MB.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
# aws-lc-sys (TLS for the AWS SDK) builds C code; cmake is its fallback build.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ./scripts/build-static.sh /out/kubestash

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="kubestash" \
      org.opencontainers.image.description="Keeps Kubernetes Secrets in step with a credstash table (DynamoDB + KMS)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kubestash /usr/local/bin/kubestash
# distroless "nonroot": uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubestash"]
CMD ["run", "--listen", "0.0.0.0:8080", "--log-format", "json"]
