# streamroute image for docker-compose.kafka.yml.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin streamroute

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Never root: a dedicated user owns only the egress state folder.
RUN useradd --system --uid 10001 --home-dir /var/lib/streamroute --create-home streamroute
WORKDIR /app
COPY --from=build /src/target/release/streamroute /usr/local/bin/streamroute
COPY config config
COPY topics topics
ENV STREAMROUTE_EGRESS__STATE_DIR=/var/lib/streamroute/egress-state
VOLUME /var/lib/streamroute
USER 10001:10001
ENTRYPOINT ["streamroute"]
