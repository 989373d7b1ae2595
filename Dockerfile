# Image for comet-worker, comet-dispatcher and the operator tools.
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential pkg-config librabbitmq-dev libcurl4-openssl-dev libjson-c-dev \
      libhiredis-dev libconfig-dev libmicrohttpd-dev libsodium-dev libssl-dev uuid-dev libcmocka-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY worker worker
COPY tools tools
COPY tests/fake-comet tests/fake-comet
RUN make -j"$(nproc)" all

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      librabbitmq4 libcurl4 libjson-c5 libhiredis0.14 libconfig9 libmicrohttpd12 libsodium23 \
      libssl3 libuuid1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 comet
COPY --from=build /src/bin/ /usr/local/bin/
COPY conf/comet-worker.conf /etc/comet/comet.conf
USER comet
# Every key can be set with COMET_* environment variables; secrets come
# from mounted files (keys, Comet admin password, callback secret).
ENTRYPOINT ["/usr/local/bin/comet-worker"]
CMD ["-c", "/etc/comet/comet.conf"]
