# syntax=docker/dockerfile:1
# Build: docker build -t webhook-log-exporter .
# Run:   docker run -p 9797:9797 -v $PWD/webhook-log-exporter.yml:/etc/webhook-log-exporter/config.yml:ro \
#          -v wle-state:/var/lib/webhook-log-exporter webhook-log-exporter

# The builder is Cargo.toml's rust-version (scripts/check-deploy.sh checks it).
FROM rust:1.88-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin && echo 'fn main() {}' > src/main.rs && cp src/main.rs src/bin/bench.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin webhook-log-exporter \
    && strip target/release/webhook-log-exporter

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/webhook-log-exporter --create-home exporter
COPY --from=build /src/target/release/webhook-log-exporter /usr/local/bin/webhook-log-exporter
COPY examples/webhook-log-exporter.yml /etc/webhook-log-exporter/config.yml
USER 10001:10001
WORKDIR /var/lib/webhook-log-exporter
EXPOSE 9797
ENTRYPOINT ["/usr/local/bin/webhook-log-exporter"]
CMD ["--config.file=/etc/webhook-log-exporter/config.yml", "--web.listen-address=:9797"]
