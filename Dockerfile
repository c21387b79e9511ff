# The Tether image: operator, scheduler, CLI and worker runtime.
#
# Built offline: `hack/build-image` first runs `pip wheel` on the host into
# build/wheels, so nothing here reaches a package index. On a machine with a
# registry, FROM pulls the official image; offline, hack/kind-up tags a
# debootstrapped bookworm rootfs with the same name.
FROM python:3.11-slim-bookworm

RUN python -m venv /opt/tether \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot
COPY build/wheels /tmp/wheels
RUN /opt/tether/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        'tether[operator]' \
    && rm -rf /tmp/wheels
COPY examples /app/examples

ENV PATH=/opt/tether/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# nonroot, as in distroless images: nothing in Tether needs root. The user has a passwd
# entry because kopf names the operator after it (getpass.getuser()).
USER 65532:65532
ENTRYPOINT ["tether"]
CMD ["--help"]
