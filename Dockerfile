# syntax=docker/dockerfile:1
# kubestash operator image: one static binary and a CA bundle on scratch,
# non-root (uid/gid 65532), under 30 MB.
#
#   docker build -t <registry>/kubestash:0.1.0 .
#
# The builder stage runs scripts/build-static.sh, the same script CI runs
# (glibc static, +crt-static, checked static and under the size budget), and
# puts the binary and Debian's CA bundle in /out. The final stage only copies
# those two files: it is FROM scratch, so it pulls nothing.
#
# Without a registry (CI): the final stage is built alone from a prebuilt
# binary by overriding the `build` stage with a named build context, a folder
# holding out/kubestash and out/ca-certificates.crt. scripts/build-image.sh
# stages that folder and runs, with buildah >= 1.28 (Debian 12):
#
#   buildah bud --build-context build=CONTEXT -f Dockerfile EMPTY_DIR
#
# `COPY --from=build` then reads CONTEXT, and the builder stage, which nothing
# else needs, is skipped (its FROM is never pulled). BuildKit does the same
# with `docker buildx build --build-context build=CONTEXT .`. So there is one
# final stage, the same for both builds. (A `FROM ${ARG}` stage switch does not
# work there: buildah 1.28 resolves stage dependencies without ARG defaults.)
#
# The binary needs the CA bundle: rustls reads the system roots (rustls-native-
# certs for AWS, rustls-platform-verifier for kube), /etc/ssl/certs/
# ca-certificates.crt, as on Debian. SSL_CERT_FILE points there explicitly.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# aws-lc-sys (TLS for the AWS SDK) builds C code; cmake is its fallback build.
RUN apt-get update && apt-get install -y --no-install-recommends cmake ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ./scripts/build-static.sh /out/kubestash \
    && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

FROM scratch
LABEL org.opencontainers.image.title="kubestash" \
      org.opencontainers.image.description="Keeps Kubernetes Secrets in step with a credstash table (DynamoDB + KMS)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kubestash /usr/local/bin/kubestash
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# No /etc/passwd on scratch: a numeric uid/gid, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubestash"]
CMD ["run", "--listen", "0.0.0.0:8080", "--log-format", "json"]
