# calllogger in a container: a build stage with the Rust toolchain, and a small runtime image
# with the host, the shipped plugins and nothing else. See README, "Container".
#
#   docker build -t calllogger .
#   docker run -e TOKEN=… -e CALLLOGGER_FRONTEND=https://monitor.example.com -e PLUGIN=SiemensHipathSerial \
#     -v calllogger-plugins:/usr/lib/calllogger/plugins -v calllogger-state:/var/lib/calllogger \
#     --device /dev/ttyUSB0 --group-add dialout calllogger

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN dist/install-root.sh /out

FROM debian:bookworm-slim
RUN useradd --system --user-group --groups dialout --no-create-home --home-dir /var/lib/calllogger calllogger \
 && install -d -o calllogger -g calllogger -m 0700 /var/lib/calllogger \
 && install -d -m 0755 /etc/calllogger
COPY --from=build /out/ /
ENV CALLLOGGER_PLUGIN_DIR=/usr/lib/calllogger/plugins \
    CALLLOGGER_STATE_DIR=/var/lib/calllogger \
    CALLLOGGER_METRICS_ADDR=0.0.0.0:9464
# Plugins (a named volume starts with the shipped ones; add yours) and the spool.
VOLUME ["/usr/lib/calllogger/plugins", "/var/lib/calllogger"]
EXPOSE 9464
# Ready: start-up done, every plugin instance running, the spool taking records. Not failed by
# a frontend outage, during which the host spools as it should.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["/usr/bin/calllogger", "health"]
USER calllogger
ENTRYPOINT ["/usr/bin/calllogger"]
CMD ["run"]
