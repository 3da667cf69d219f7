# The test broker as an image, for deploy/compose.yaml: nisshi, the Kafka-compatible broker that
# kappa's tests run (docs/testbed.md), with its sqlite storage in /var/lib/nisshi. No registry
# carries an image of it: `scripts/image.sh broker` builds this from the binary
# scripts/install-broker.sh built (context: bin/nisshi and the libraries it loads under lib/).
# In production the compose file's broker is your Kafka; nothing in kappa depends on this image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 nisshi \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nisshi --shell /usr/sbin/nologin nisshi \
    && install -d -o 10001 -g 10001 /var/lib/nisshi
COPY lib/ /
COPY bin/nisshi /usr/local/bin/nisshi
USER 10001:10001
# The sqlite path is relative to the working directory.
WORKDIR /var/lib/nisshi
EXPOSE 9092
CMD ["nisshi", "broker", "--listener-url", "tcp://0.0.0.0:9092", \
     "--storage-engine", "sqlite://nisshi.db?maintenance_interval=1s"]
